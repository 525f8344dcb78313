//! `plot.svg`: one panel per algorithm and the ensemble; in each, the causes sorted by
//! calibrated mean (largest first), the mean as a bar, its 95 % interval as a whisker and the
//! uncalibrated CSMF as a diamond, on one percent axis for every panel so panels compare.

use std::fmt::Write;

use vacal_contract::CalibrationSuccess;

use super::{cause_label, escape, percent, setting_line, table, warnings_of, TableLine};

const WIDTH: f64 = 760.0;
/// Where the bars start: the cause labels are right-aligned before it.
const PLOT_LEFT: f64 = 236.0;
/// Where the axis ends: room after it for the value labels.
const PLOT_RIGHT: f64 = 690.0;
const ROW_HEIGHT: f64 = 24.0;
const BAR_HEIGHT: f64 = 14.0;
const HEADER_HEIGHT: f64 = 96.0;
const PANEL_TITLE_HEIGHT: f64 = 30.0;
const AXIS_HEIGHT: f64 = 26.0;
const PANEL_GAP: f64 = 18.0;

const CALIBRATED_FILL: &str = "#3f6fa8";
const KEPT_FILL: &str = "#b9bec6";
const WHISKER: &str = "#1d2733";
const UNCALIBRATED: &str = "#c8541c";
const WARNING: &str = "#b42318";
const MUTED: &str = "#59636e";
const FONT: &str = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";

/// An algorithm's name as its authors write it.
pub fn row_label(row: &str) -> String {
    match row {
        "eava" => "EAVA".into(),
        "insilicova" => "InSilicoVA".into(),
        "interva" => "InterVA".into(),
        "ensemble" => "Ensemble".into(),
        other => other.to_string(),
    }
}

/// The axis maximum in percent: the largest value rounded up to a tick, and the tick step.
pub(super) fn axis(max_share: f64) -> (f64, f64) {
    let top = (100.0 * max_share).max(1.0);
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 25.0]
        .into_iter()
        .find(|s| top / s <= 8.0)
        .unwrap_or(25.0);
    ((top / step).ceil() * step, step)
}

struct Scale {
    top_percent: f64,
}

impl Scale {
    fn x(&self, share: f64) -> f64 {
        let clamped = (100.0 * share).clamp(0.0, self.top_percent);
        PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * clamped / self.top_percent
    }
}

/// The figure of a successful result.
pub fn plot_svg(result: &CalibrationSuccess) -> String {
    let output = &result.output;
    let lines = table(output);
    let max_share = lines
        .iter()
        .map(|l| l.upper.max(l.uncalibrated_csmf).max(l.mean))
        .fold(0.0, f64::max);
    let (top_percent, step) = axis(max_share);
    let scale = Scale { top_percent };
    let rows: Vec<&str> = output.calibrated.keys().map(String::as_str).collect();
    let causes = output.causes.len() as f64;
    let panel_height = PANEL_TITLE_HEIGHT + causes * ROW_HEIGHT + AXIS_HEIGHT;
    let height = HEADER_HEIGHT + rows.len() as f64 * (panel_height + PANEL_GAP);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="{FONT}" font-size="12" role="img" aria-labelledby="plot-title plot-setting">"#
    );
    let _ = write!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text id="plot-title" x="16" y="28" font-size="18" font-weight="600" fill="{WHISKER}">Calibrated cause-specific mortality fractions</text><text id="plot-setting" x="16" y="50" font-size="13" fill="{MUTED}">{}</text>"##,
        escape(&setting_line(result))
    );
    legend(&mut svg);

    let mut y = HEADER_HEIGHT;
    for row in rows {
        let mut row_lines: Vec<&TableLine> = lines.iter().filter(|l| l.row == row).collect();
        row_lines.sort_by(|a, b| b.mean.total_cmp(&a.mean));
        panel(&mut svg, result, row, &row_lines, &scale, step, y);
        y += panel_height + PANEL_GAP;
    }
    svg.push_str("</svg>\n");
    svg
}

fn legend(svg: &mut String) {
    let y = 74.0;
    let _ = write!(
        svg,
        r#"<g font-size="12" fill="{MUTED}"><rect x="16" y="{}" width="22" height="{BAR_HEIGHT}" fill="{CALIBRATED_FILL}"/><text x="44" y="{}">calibrated mean</text>"#,
        y - 11.0,
        y
    );
    let _ = write!(
        svg,
        r#"<line x1="160" y1="{y0}" x2="190" y2="{y0}" stroke="{WHISKER}" stroke-width="1.5"/><line x1="160" y1="{a}" x2="160" y2="{b}" stroke="{WHISKER}" stroke-width="1.5"/><line x1="190" y1="{a}" x2="190" y2="{b}" stroke="{WHISKER}" stroke-width="1.5"/><text x="198" y="{y}">95% credible interval</text>"#,
        y0 = y - 4.0,
        a = y - 8.0,
        b = y
    );
    let _ = write!(
        svg,
        r##"<path d="{}" fill="#ffffff" stroke="{UNCALIBRATED}" stroke-width="2"/><text x="364" y="{y}">uncalibrated (VA algorithm)</text>"##,
        diamond(352.0, y - 4.0)
    );
    let _ = write!(
        svg,
        r#"<rect x="548" y="{}" width="22" height="{BAR_HEIGHT}" fill="{KEPT_FILL}"/><text x="576" y="{y}">not calibrated (as observed)</text></g>"#,
        y - 11.0
    );
}

fn diamond(cx: f64, cy: f64) -> String {
    let r = 5.5;
    format!(
        "M{cx} {} L{} {cy} L{cx} {} L{} {cy} Z",
        cy - r,
        cx + r,
        cy + r,
        cx - r
    )
}

/// What a panel's title line says about the fit: λ, R-hat, ESS, the sampler when unusual.
fn fit_summary(result: &CalibrationSuccess, row: &str) -> String {
    let output = &result.output;
    let mut parts = Vec::new();
    if let Some(Some(pc)) = output.path_correction.get(row) {
        let stalled = if pc.stalled { " (stalled)" } else { "" };
        parts.push(format!("λ {:.2}{stalled}", pc.lambda.max(0.0)));
    }
    match output.diagnostics.get(row).and_then(Option::as_ref) {
        Some(d) => {
            if let Some(rhat) = d.max_rhat {
                parts.push(format!("R-hat {rhat:.3}"));
            }
            if let Some(ess) = d.min_ess_bulk {
                parts.push(format!("ESS {ess:.0}"));
            }
        }
        None => parts.push("not calibrated".into()),
    }
    parts.join(" · ")
}

fn panel(
    svg: &mut String,
    result: &CalibrationSuccess,
    row: &str,
    lines: &[&TableLine],
    scale: &Scale,
    step: f64,
    top: f64,
) {
    let warnings = warnings_of(&result.output, row);
    let _ = write!(
        svg,
        r#"<g class="panel" data-algorithm="{}"><text x="16" y="{}" font-size="14" font-weight="600" fill="{WHISKER}">{}</text><text x="{PLOT_RIGHT}" y="{}" text-anchor="end" font-size="11" fill="{MUTED}">{}</text>"#,
        escape(row),
        top + 18.0,
        escape(&row_label(row)),
        top + 18.0,
        escape(&fit_summary(result, row)),
    );
    if !warnings.is_empty() {
        let plural = if warnings.len() == 1 { "" } else { "s" };
        let _ = write!(
            svg,
            r#"<text class="warning" x="{}" y="{}" font-size="12" font-weight="600" fill="{WARNING}">⚠ {} warning{plural}: read before use<title>{}</title></text>"#,
            PLOT_LEFT,
            top + 18.0,
            warnings.len(),
            escape(&warnings.join("\n"))
        );
    }
    let rows_top = top + PANEL_TITLE_HEIGHT;
    let rows_bottom = rows_top + lines.len() as f64 * ROW_HEIGHT;
    // Grid and axis.
    let mut tick = 0.0;
    while tick <= scale.top_percent + 1e-9 {
        let x = scale.x(tick / 100.0);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{rows_top}" x2="{x:.1}" y2="{rows_bottom}" stroke="#e3e6ea"/><text x="{x:.1}" y="{}" text-anchor="middle" font-size="11" fill="{MUTED}">{tick}%</text>"##,
            rows_bottom + 16.0
        );
        tick += step;
    }
    let _ = write!(
        svg,
        r#"<line x1="{PLOT_LEFT}" y1="{rows_bottom}" x2="{PLOT_RIGHT}" y2="{rows_bottom}" stroke="{MUTED}"/>"#
    );
    for (i, line) in lines.iter().enumerate() {
        let y = rows_top + i as f64 * ROW_HEIGHT;
        let mid = y + ROW_HEIGHT / 2.0;
        let fill = if line.calibrated {
            CALIBRATED_FILL
        } else {
            KEPT_FILL
        };
        let label = cause_label(line.cause);
        let status = if line.calibrated {
            "calibrated"
        } else {
            "not calibrated"
        };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" fill="{WHISKER}">{}</text>"#,
            PLOT_LEFT - 8.0,
            mid + 4.0,
            escape(&label)
        );
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{PLOT_LEFT}" y="{}" width="{:.2}" height="{BAR_HEIGHT}" fill="{fill}" data-algorithm="{}" data-cause="{}" data-mean="{}" data-lower="{}" data-upper="{}" data-uncalibrated="{}"><title>{}, {}: {}% (95% interval {}–{}%), uncalibrated {}%, {status}</title></rect>"#,
            mid - BAR_HEIGHT / 2.0,
            scale.x(line.mean) - PLOT_LEFT,
            escape(line.row),
            escape(line.cause),
            line.mean,
            line.lower,
            line.upper,
            line.uncalibrated_csmf,
            escape(&row_label(line.row)),
            escape(&label),
            percent(line.mean),
            percent(line.lower),
            percent(line.upper),
            percent(line.uncalibrated_csmf),
        );
        if line.calibrated {
            let (lo, hi) = (scale.x(line.lower), scale.x(line.upper));
            let _ = write!(
                svg,
                r#"<path d="M{lo:.1} {mid} H{hi:.1} M{lo:.1} {} V{} M{hi:.1} {} V{}" stroke="{WHISKER}" stroke-width="1.5" fill="none"/>"#,
                mid - 4.0,
                mid + 4.0,
                mid - 4.0,
                mid + 4.0
            );
        }
        let ux = scale.x(line.uncalibrated_csmf);
        let _ = write!(
            svg,
            r##"<path d="{}" fill="#ffffff" stroke="{UNCALIBRATED}" stroke-width="2"/>"##,
            diamond(ux, mid)
        );
        let value_x = scale.x(line.upper.max(line.uncalibrated_csmf).max(line.mean)) + 8.0;
        let kept = if line.calibrated {
            ""
        } else {
            " (not calibrated)"
        };
        let _ = write!(
            svg,
            r#"<text x="{value_x:.1}" y="{}" font-size="11" fill="{WHISKER}">{}%{kept}</text>"#,
            mid + 4.0,
            percent(line.mean)
        );
    }
    svg.push_str("</g>");
}
