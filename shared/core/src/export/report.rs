//! `report.html`: one self-contained page (inline CSS and figure, no external requests) that
//! prints well to PDF: the inputs, the table, the figure, the diagnostics, the warnings, and
//! the citation and data attribution.

use std::fmt::Write;

use vacal_contract::CalibrationSuccess;

use super::plot::row_label;
use super::{cause_label, escape, percent, plot_svg, setting_line, table, warnings_of};

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
  color: #1d2733; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d5d9de; }
h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
.setting { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #e3e6ea; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.kept td { color: #59636e; }
.warnings li { color: #b42318; margin-bottom: 0.4rem; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
footer { margin-top: 2.5rem; font-size: 0.8rem; color: #59636e; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; }
  table, figure { break-inside: avoid; } }
";

fn row(cells: &[String]) -> String {
    let mut out = String::from("<tr>");
    for cell in cells {
        out.push_str(cell);
    }
    out.push_str("</tr>");
    out
}

fn td(text: &str) -> String {
    format!("<td>{}</td>", escape(text))
}

fn num(text: &str) -> String {
    format!("<td class=\"num\">{}</td>", escape(text))
}

/// The report of job `job_id`'s successful result.
pub fn report_html(job_id: &str, result: &CalibrationSuccess) -> String {
    let output = &result.output;
    let settings = &output.settings;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>Calibrated CSMFs, job {}</title>\
         <style>{STYLE}</style></head><body><main>",
        escape(job_id)
    );
    let _ = write!(
        html,
        "<h1>Calibrated cause-specific mortality fractions</h1><p class=\"setting\">{}</p>",
        escape(&setting_line(result))
    );

    // Inputs.
    html.push_str("<h2>Inputs</h2><table><tbody>");
    let deaths: Vec<String> = output
        .uncalibrated_deaths
        .iter()
        .map(|(algorithm, d)| {
            let total: f64 = d.iter().map(|a| a.0).sum();
            format!("{} ({total} deaths)", row_label(algorithm))
        })
        .collect();
    let text = |key: &str| settings[key].as_str().unwrap_or("none").to_string();
    let mcmc = &settings["mcmc"];
    let inputs = [
        ("Job", job_id.to_string()),
        ("Algorithms", deaths.join(", ")),
        ("Age group", text("age_group")),
        ("Country", text("country")),
        ("CHAMPS matrices of", text("matrix_country")),
        ("Matrix type", text("mmat_type")),
        ("Rules", format!("vacalibration {}", text("rules"))),
        (
            "Path correction",
            if settings["path_correction"] == false {
                "off"
            } else {
                "on"
            }
            .to_string(),
        ),
        (
            "MCMC",
            format!(
                "{} chains × {} draws after {} warm-up iterations (thinning {}), seed {}",
                mcmc["n_chain"],
                mcmc["draws_per_chain"],
                mcmc["warmup_per_chain"],
                mcmc["n_thin"],
                mcmc["seed"]
            ),
        ),
        (
            "Completed",
            result.completed_at.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Engine", output.engine_version.clone()),
    ];
    for (name, value) in inputs {
        html.push_str(&row(&[
            format!("<th scope=\"row\">{name}</th>"),
            td(&value),
        ]));
    }
    html.push_str("</tbody></table>");

    // The table, per row, sorted like the figure.
    html.push_str("<h2>Calibrated CSMFs</h2>");
    let lines = table(output);
    for name in output.calibrated.keys() {
        let mut row_lines: Vec<_> = lines.iter().filter(|l| l.row == name).collect();
        row_lines.sort_by(|a, b| b.mean.total_cmp(&a.mean));
        let _ = write!(
            html,
            "<h3>{}</h3><table><thead><tr><th>Cause</th><th class=\"num\">Uncalibrated %</th>\
             <th class=\"num\">Calibrated %</th><th class=\"num\">95% interval</th>\
             <th class=\"num\">Deaths</th><th class=\"num\">Calibrated deaths</th></tr></thead><tbody>",
            escape(&row_label(name))
        );
        for line in row_lines {
            let label = if line.calibrated {
                cause_label(line.cause)
            } else {
                format!("{} (not calibrated)", cause_label(line.cause))
            };
            let class = if line.calibrated {
                ""
            } else {
                " class=\"kept\""
            };
            let _ = write!(
                html,
                "<tr{class}>{}{}{}{}{}{}</tr>",
                td(&label),
                num(&percent(line.uncalibrated_csmf)),
                num(&percent(line.mean)),
                num(&format!("{}–{}", percent(line.lower), percent(line.upper))),
                num(&format!("{}", line.uncalibrated_deaths)),
                num(&format!("{}", line.calibrated_deaths)),
            );
        }
        html.push_str("</tbody></table>");
    }

    let _ = write!(
        html,
        "<h2>Figure</h2><figure>{}<figcaption>Bars: calibrated mean; whiskers: 95% credible \
         interval; diamonds: the algorithm's uncalibrated CSMF.</figcaption></figure>",
        plot_svg(result)
    );

    // Diagnostics.
    html.push_str(
        "<h2>Diagnostics</h2><table><thead><tr><th>Row</th><th>Sampler</th>\
         <th class=\"num\">max R-hat</th><th class=\"num\">min bulk ESS</th>\
         <th class=\"num\">Divergences</th><th class=\"num\">λ</th><th>Path correction</th>\
         </tr></thead><tbody>",
    );
    for name in output.calibrated.keys() {
        let d = output.diagnostics.get(name).and_then(Option::as_ref);
        let optional =
            |x: Option<f64>, digits: usize| x.map_or("-".to_string(), |x| format!("{x:.digits$}"));
        let pc = output.path_correction.get(name).copied().flatten();
        let stall = match pc {
            Some(pc) if pc.stalled => "stalled",
            Some(_) => "ran",
            None => "-",
        };
        html.push_str(&row(&[
            td(&row_label(name)),
            td(d.map_or("not calibrated", |d| d.sampler.as_str())),
            num(&optional(d.and_then(|d| d.max_rhat), 3)),
            num(&optional(d.and_then(|d| d.min_ess_bulk), 0)),
            num(&d.map_or("-".into(), |d| d.divergences.to_string())),
            num(&optional(pc.map(|pc| pc.lambda.max(0.0)), 2)),
            td(stall),
        ]));
    }
    html.push_str("</tbody></table>");

    html.push_str("<h2>Warnings</h2>");
    if output.warnings.is_empty() {
        html.push_str("<p>None: every fit looks converged and no path correction stalled.</p>");
    } else {
        html.push_str("<ul class=\"warnings\">");
        for name in output.calibrated.keys() {
            for warning in warnings_of(output, name) {
                let _ = write!(
                    html,
                    "<li><strong>{}</strong>: {}</li>",
                    escape(&row_label(name)),
                    escape(warning)
                );
            }
        }
        html.push_str("</ul>");
    }

    html.push_str(
        "<footer><p>Calibrated with vacal, a native implementation of the Bayesian calibration \
         of the R package vacalibration (Sandipan Pramanik; MIT licence). Misclassification \
         estimates from CHAMPS (Child Health and Mortality Prevention Surveillance): Pramanik S. \
         et al. (2025), <em>Modeling structure and country-specific heterogeneity in \
         misclassification matrices of verbal autopsy-based cause of death classifiers</em>, \
         Annals of Applied Statistics 19(2), doi:10.1214/24-AOAS2006; Pramanik S. et al. \
         (2026), <em>Country-Specific Estimates of Misclassification Rates of Computer-Coded \
         Verbal Autopsy Algorithms</em>, BMJ Global Health, doi:10.1136/bmjgh-2025-021747. \
         Data of vacalibration © 2025 Sandipan Pramanik, MIT licence.</p></footer>",
    );
    html.push_str("</main></body></html>\n");
    html
}
