//! A successful calibration as files for reports: a CSV table, an SVG figure and a
//! self-contained HTML report. Pure functions of the contract's result type, so the API, the
//! CLI and tests render the same bytes.

mod csv;
mod plot;
mod report;

pub use csv::{batch_csv, result_csv, CSV_HEADER};
pub use plot::plot_svg;
pub use report::report_html;

use vacal_contract::{CalibrationOutput, CalibrationSuccess};

/// One line of the result table: a row (algorithm or `ensemble`) × cause.
#[derive(Debug, Clone, PartialEq)]
pub struct TableLine<'a> {
    pub row: &'a str,
    pub cause: &'a str,
    /// The cause was calibrated in this row (not left out by donotcalib or a screen).
    pub calibrated: bool,
    pub uncalibrated_csmf: f64,
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    pub uncalibrated_deaths: f64,
    pub calibrated_deaths: f64,
}

/// Sums per cause over the algorithms (the ensemble's deaths).
fn pooled<'a>(
    per_algorithm: impl Iterator<Item = &'a Vec<vacal_contract::Amount>>,
    n: usize,
) -> Vec<f64> {
    let mut total = vec![0.0; n];
    for deaths in per_algorithm {
        for (t, d) in total.iter_mut().zip(deaths) {
            *t += d.0;
        }
    }
    total
}

/// Every row × cause of `output`, rows in result order and causes in the result's order. The
/// ensemble's deaths are the algorithms' deaths added up (calibrated: redistributed by the
/// ensemble CSMF).
pub fn table(output: &CalibrationOutput) -> Vec<TableLine<'_>> {
    let n = output.causes.len();
    let mut lines = Vec::new();
    for (row, estimate) in &output.calibrated {
        let (uncalibrated_deaths, calibrated_deaths) = match output.uncalibrated_deaths.get(row) {
            Some(observed) => (
                observed.iter().map(|a| a.0).collect(),
                output.calibrated_deaths[row].iter().map(|a| a.0).collect(),
            ),
            None => (
                pooled(output.uncalibrated_deaths.values(), n),
                pooled(
                    output
                        .calibrated_deaths_ensemble
                        .iter()
                        .flat_map(|by_algorithm| by_algorithm.values()),
                    n,
                ),
            ),
        };
        let uncalibrated = &output.uncalibrated[row];
        let calibrated = &output.calibrated_causes[row];
        for (j, cause) in output.causes.iter().enumerate() {
            lines.push(TableLine {
                row,
                cause,
                calibrated: calibrated[j],
                uncalibrated_csmf: uncalibrated[j],
                mean: estimate.mean[j],
                lower: estimate.lower_ci[j],
                upper: estimate.upper_ci[j],
                uncalibrated_deaths: uncalibrated_deaths[j],
                calibrated_deaths: calibrated_deaths[j],
            });
        }
    }
    lines
}

/// The setting of a result in words: "neonate · Mozambique · prior matrices · rules 2.3.1".
fn setting_line(result: &CalibrationSuccess) -> String {
    let settings = &result.output.settings;
    let text = |key: &str| settings[key].as_str().map(str::to_string);
    let country = match (text("country"), text("matrix_country")) {
        (Some(c), Some(m)) if !c.eq_ignore_ascii_case(&m) => {
            format!("{c} (CHAMPS matrices of {m})")
        }
        (Some(c), _) => c,
        (None, _) => "own matrices".to_string(),
    };
    let mut parts = vec![
        text("age_group").unwrap_or_else(|| "no age group".into()),
        country,
        format!(
            "{} matrices",
            text("mmat_type").unwrap_or_else(|| "?".into())
        ),
    ];
    if let Some(rules) = text("rules") {
        parts.push(format!("rules {rules}"));
    }
    if settings["path_correction"] == false {
        parts.push("no path correction".into());
    }
    parts.join(" · ")
}

/// The warnings of one row (they start with "row: ").
fn warnings_of<'a>(output: &'a CalibrationOutput, row: &str) -> Vec<&'a str> {
    let prefix = format!("{row}: ");
    output
        .warnings
        .iter()
        .filter_map(|w| w.strip_prefix(&prefix))
        .collect()
}

/// A broad cause as an analyst reads it; other causes as given, underscores as spaces.
pub fn cause_label(cause: &str) -> String {
    let known = match cause {
        "congenital_malformation" => "Congenital malformation",
        "pneumonia" => "Pneumonia",
        "sepsis_meningitis_inf" => "Sepsis, meningitis, infections",
        "ipre" => "Intrapartum-related events",
        "other" => "Other",
        "prematurity" => "Prematurity",
        "malaria" => "Malaria",
        "diarrhea" => "Diarrhoea",
        "severe_malnutrition" => "Severe malnutrition",
        "hiv" => "HIV",
        "injury" => "Injury",
        "other_infections" => "Other infections",
        "nn_causes" => "Neonatal causes",
        other => return other.replace('_', " "),
    };
    known.to_string()
}

/// Text for XML and HTML: the five special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A share as a percentage with one decimal.
fn percent(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vacal_engine::{calibrate, NoProgress};

    use super::*;
    use crate::request::parse_request;
    use crate::result::calibration_output;

    /// A result whose algorithm and causes carry characters that CSV, XML and HTML treat
    /// specially.
    fn awkward() -> CalibrationSuccess {
        let request = parse_request(&json!({
            "va_data": {"a&b": {"x, \"y\"": 30, "<script>": 70}},
            "missmat": {"a&b": {"causes": ["x, \"y\"", "<script>"], "matrix": [[8, 2], [3, 7]]}},
            "mcmc": {"n_mcmc": 200, "n_burn": 200},
        }))
        .unwrap();
        let calibration = calibrate(&request, &NoProgress).unwrap();
        CalibrationSuccess {
            output: calibration_output(&request, &calibration),
            age_group: None,
            country: None,
            completed_at: None,
            cache_info: None,
        }
    }

    #[test]
    fn csv_fields_with_separators_and_quotes_are_quoted() {
        let csv = result_csv(&awkward().output);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert!(
            lines[1].starts_with("a&b,\"x, \"\"y\"\"\",true,0.3,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("a&b,<script>,true,0.7,"),
            "{}",
            lines[2]
        );
        assert_eq!(lines.len(), 4, "two lines and the final line break");
    }

    #[test]
    fn names_are_text_in_the_figure_and_the_report() {
        let result = awkward();
        for page in [plot_svg(&result), report_html("job_1", &result)] {
            assert!(!page.contains("<script>"), "escaped everywhere");
            assert!(page.contains("&lt;script&gt;"));
            assert!(page.contains("a&amp;b"));
        }
    }

    #[test]
    fn the_axis_ends_on_a_tick_above_the_largest_value() {
        assert_eq!(plot::axis(0.591), (60.0, 10.0));
        assert_eq!(plot::axis(0.08), (8.0, 1.0));
        assert_eq!(plot::axis(0.999), (100.0, 20.0));
        assert_eq!(plot::axis(0.0), (1.0, 1.0));
    }
}
