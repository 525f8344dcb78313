//! `result.csv`: one line per row × cause, numbers exactly as in `/result`.

use vacal_contract::CalibrationOutput;

use super::table;

pub const CSV_HEADER: &str = "algorithm,cause,calibrated,uncalibrated_csmf,calibrated_mean,\
calibrated_lower,calibrated_upper,uncalibrated_deaths,calibrated_deaths";

/// A field quoted when it holds a separator, a quote or a line break (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The lines of one result, each prefixed with `first` columns (the job ID in a batch file).
fn lines(output: &CalibrationOutput, first: Option<&str>, out: &mut String) {
    for line in table(output) {
        if let Some(first) = first {
            out.push_str(&field(first));
            out.push(',');
        }
        // `{}` prints the shortest text that parses back to the same double.
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\r\n",
            field(line.row),
            field(line.cause),
            line.calibrated,
            line.uncalibrated_csmf,
            line.mean,
            line.lower,
            line.upper,
            line.uncalibrated_deaths,
            line.calibrated_deaths,
        ));
    }
}

/// The CSV of one result.
pub fn result_csv(output: &CalibrationOutput) -> String {
    let mut out = format!("{CSV_HEADER}\r\n");
    lines(output, None, &mut out);
    out
}

/// The CSV of a batch: every successful member's lines, with its job ID first.
pub fn batch_csv<'a>(
    members: impl IntoIterator<Item = (&'a str, &'a CalibrationOutput)>,
) -> String {
    let mut out = format!("job_id,{CSV_HEADER}\r\n");
    for (job_id, output) in members {
        lines(output, Some(job_id), &mut out);
    }
    out
}
