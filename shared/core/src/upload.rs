//! Analysts' files: one CSV or TSV per algorithm (comma, semicolon or tab; UTF-8 with or
//! without BOM; quoted fields; CRLF), in one of three forms told apart by the header:
//! - long: `ID` and `cause` (or `cause1`), one row per death, labels specific or broad;
//! - wide: `ID` and broad-cause columns holding 0 or 1;
//! - counts: `cause` and `deaths` (or `count`), one row per broad cause.
//!
//! A file becomes the same JSON `va_data` entry a JSON body would carry, so the request then
//! goes through the one validation of JSON bodies; what only a file can get wrong (lines,
//! columns, delimiters, encodings) is refused here, naming the line and column.

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use vacal_engine::data;
use vacal_engine::prepare::LabelMap;
use vacal_engine::request::Rules;
use vacal_engine::AgeGroup;

use crate::validation::{record_id_ok, ValidationError, DEFAULT_AGE_GROUP};
use vacal_contract::FieldError;

/// Errors reported per file before giving up on it.
const MAX_ERRORS: usize = 10;

/// The form of a file, detected from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileForm {
    Long,
    Wide,
    Counts,
}

impl FileForm {
    pub fn as_str(self) -> &'static str {
        match self {
            FileForm::Long => "long",
            FileForm::Wide => "wide",
            FileForm::Counts => "counts",
        }
    }
}

/// A file read into the JSON form of its `va_data` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadFile {
    pub form: FileForm,
    pub va_data: Value,
    /// Rows of a long file whose label is `Unspecified` (dropped, as cause_map does).
    pub unspecified: usize,
}

struct Errors {
    field: String,
    list: Vec<FieldError>,
}

impl Errors {
    fn push(&mut self, message: String) {
        if self.list.len() < MAX_ERRORS {
            self.list.push(FieldError {
                field: self.field.clone(),
                message,
            });
        }
    }

    fn full(&self) -> bool {
        self.list.len() >= MAX_ERRORS
    }

    fn into_result<T>(self, ok: T) -> Result<T, ValidationError> {
        if self.list.is_empty() {
            Ok(ok)
        } else {
            Err(ValidationError { errors: self.list })
        }
    }
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(previous + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

/// Up to three known labels closest to `given`, as " (did you mean 'a' or 'b'?)", or "".
fn suggestion<'a>(given: &str, known: impl Iterator<Item = &'a str>) -> String {
    let given = given.to_lowercase();
    let limit = (given.chars().count() / 3).max(2);
    let mut close: Vec<(usize, &str)> = known
        .map(|k| (distance(&given, k), k))
        .filter(|(d, _)| *d <= limit)
        .collect();
    close.sort();
    close.dedup_by(|a, b| a.1 == b.1);
    let names: Vec<String> = close
        .iter()
        .take(3)
        .map(|(_, k)| format!("'{k}'"))
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", names.join(" or "))
    }
}

/// The delimiter of the header line: the most frequent of comma, semicolon and tab outside
/// quotes (comma on a tie).
fn delimiter(header: &[u8]) -> u8 {
    let mut quoted = false;
    let mut counts = [0usize; 3];
    for &b in header {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
    [b',', b';', b'\t'][best]
}

fn delimiter_name(d: u8) -> &'static str {
    match d {
        b';' => "semicolon",
        b'\t' => "tab",
        _ => "comma",
    }
}

/// The rows of a delimited file as text, each with its line number; the header first.
fn rows(bytes: &[u8], errors: &mut Errors) -> Vec<(u64, Vec<String>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        errors.push("the file is empty".into());
        return Vec::new();
    }
    let header_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let delimiter = delimiter(&bytes[..header_end]);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut out: Vec<(u64, Vec<String>)> = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                errors.push(format!("line {line}: cannot be read: {e}"));
                break;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue; // blank lines, e.g. at the end
        }
        let mut fields = Vec::with_capacity(record.len());
        for (column, field) in record.iter().enumerate() {
            match std::str::from_utf8(field) {
                Ok(text) => fields.push(text.to_string()),
                Err(_) => {
                    errors.push(format!(
                        "line {line}, column {}: is not UTF-8 text (save the file as UTF-8)",
                        column + 1
                    ));
                    fields.push(String::new());
                }
            }
        }
        if let Some((_, header)) = out.first() {
            if fields.len() != header.len() {
                errors.push(format!(
                    "line {line}: has {} fields where the header has {} ({} separated)",
                    fields.len(),
                    header.len(),
                    delimiter_name(delimiter)
                ));
                if errors.full() {
                    break;
                }
                continue;
            }
        }
        out.push((line, fields));
    }
    out
}

fn column(header: &[String], names: &[&str]) -> Option<usize> {
    header
        .iter()
        .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
}

/// Reads one algorithm's file (`field` is its part name, e.g. `va_data.eava`).
pub fn read_file(
    field: &str,
    bytes: &[u8],
    age_group: AgeGroup,
    rules: Rules,
) -> Result<ReadFile, ValidationError> {
    let mut errors = Errors {
        field: field.to_string(),
        list: Vec::new(),
    };
    let rows = rows(bytes, &mut errors);
    let Some(((_, header), body)) = rows.split_first() else {
        if errors.list.is_empty() {
            errors.push("the file is empty".into());
        }
        return Err(ValidationError {
            errors: errors.list,
        });
    };
    if body.is_empty() && errors.list.is_empty() {
        errors.push("the file has a header but no rows".into());
    }
    if !errors.list.is_empty() {
        return Err(ValidationError {
            errors: errors.list,
        });
    }
    let id = column(header, &["id"]);
    let cause = column(header, &["cause", "cause1"]);
    let deaths = column(header, &["deaths", "count"]);
    match (id, cause, deaths) {
        (Some(id), Some(cause), _) => long(body, id, cause, age_group, rules, errors),
        (None, Some(cause), Some(deaths)) => counts(body, cause, deaths, age_group, errors),
        (Some(id), None, _) => wide(header, body, id, age_group, errors),
        _ => {
            errors.push(format!(
                "line 1: cannot tell the file's form from its header '{}': expected ID and \
                 cause (or cause1), ID and broad-cause columns, or cause and deaths (or count)",
                header.join(",")
            ));
            Err(ValidationError {
                errors: errors.list,
            })
        }
    }
}

/// Checks an ID's form and that it is new; returns false (with the error) otherwise.
fn check_id(id: &str, line: u64, first_seen: &mut HashMap<String, u64>, errors: &mut Errors) {
    let id = id.trim();
    if !record_id_ok(id) {
        errors.push(format!(
            "line {line}: ID '{id}' must be 1-50 characters of letters, digits, '_' or '-'"
        ));
    } else if let Some(first) = first_seen.insert(id.to_string(), line) {
        errors.push(format!(
            "line {line}: ID '{id}' appears more than once (first on line {first})"
        ));
    }
}

fn long(
    body: &[(u64, Vec<String>)],
    id: usize,
    cause: usize,
    age_group: AgeGroup,
    rules: Rules,
    mut errors: Errors,
) -> Result<ReadFile, ValidationError> {
    let labels: Vec<String> = body.iter().map(|(_, f)| f[cause].to_lowercase()).collect();
    let is_unspecified = |label: &str| label == "unspecified";
    let label_map = LabelMap::new(
        age_group,
        rules,
        labels
            .iter()
            .map(String::as_str)
            .filter(|l| !is_unspecified(l)),
    );
    let mut first_seen = HashMap::new();
    let mut records = Vec::with_capacity(body.len());
    let mut unspecified = 0;
    for ((line, fields), label) in body.iter().zip(&labels) {
        check_id(&fields[id], *line, &mut first_seen, &mut errors);
        if is_unspecified(label) {
            unspecified += 1;
        } else if label_map.broad_cause(label).is_none() {
            let map = data::cause_map(age_group);
            let mut candidates: Vec<&str> = map.lookup.keys().map(String::as_str).collect();
            if rules == Rules::V2_3_1 {
                candidates.extend(map.broad_causes.iter().map(String::as_str));
                candidates.extend(
                    data::labels_added_in_2_3_1(age_group)
                        .iter()
                        .map(|(l, _)| *l),
                );
            }
            errors.push(format!(
                "line {line}: unknown cause '{}' for age group {}{}",
                fields[cause],
                age_group.as_str(),
                suggestion(label, candidates.into_iter())
            ));
        }
        if errors.full() {
            break;
        }
        records.push(json!({"ID": fields[id].trim(), "cause": fields[cause]}));
    }
    errors.into_result(ReadFile {
        form: FileForm::Long,
        va_data: Value::Array(records),
        unspecified,
    })
}

/// The broad cause a column or row names (case-insensitive), or the error's suggestion.
fn broad_cause(name: &str, age_group: AgeGroup) -> Result<&'static str, String> {
    let causes = age_group.causes();
    causes
        .iter()
        .find(|c| c.eq_ignore_ascii_case(name.trim()))
        .map(String::as_str)
        .ok_or_else(|| suggestion(name.trim(), causes.iter().map(String::as_str)))
}

fn wide(
    header: &[String],
    body: &[(u64, Vec<String>)],
    id: usize,
    age_group: AgeGroup,
    mut errors: Errors,
) -> Result<ReadFile, ValidationError> {
    let mut causes = Vec::new();
    for (j, name) in header.iter().enumerate().filter(|(j, _)| *j != id) {
        match broad_cause(name, age_group) {
            Ok(cause) if causes.contains(&cause) => errors.push(format!(
                "line 1, column {}: cause '{cause}' has two columns",
                j + 1
            )),
            Ok(cause) => causes.push(cause),
            Err(hint) => errors.push(format!(
                "line 1, column {}: '{name}' is not a broad cause of age group {}{hint}",
                j + 1,
                age_group.as_str()
            )),
        }
    }
    if !errors.list.is_empty() {
        return Err(ValidationError {
            errors: errors.list,
        });
    }
    let mut first_seen = HashMap::new();
    let mut rows = Vec::with_capacity(body.len());
    for (line, fields) in body {
        check_id(&fields[id], *line, &mut first_seen, &mut errors);
        let mut row = Vec::with_capacity(causes.len());
        for (j, field) in fields.iter().enumerate().filter(|(j, _)| *j != id) {
            match field.trim() {
                "0" => row.push(0),
                "1" => row.push(1),
                other => errors.push(format!(
                    "line {line}, column {} ({}): must be 0 or 1, got '{other}'",
                    j + 1,
                    header[j].trim()
                )),
            }
        }
        let ones = row.iter().filter(|x| **x == 1).count();
        if row.len() == causes.len() && ones != 1 {
            errors.push(format!(
                "line {line}: each death needs exactly one 1 (its cause), this row has {ones}"
            ));
        }
        if errors.full() {
            break;
        }
        rows.push(row);
    }
    errors.into_result(ReadFile {
        form: FileForm::Wide,
        va_data: json!({"causes": causes, "rows": rows}),
        unspecified: 0,
    })
}

fn counts(
    body: &[(u64, Vec<String>)],
    cause: usize,
    deaths: usize,
    age_group: AgeGroup,
    mut errors: Errors,
) -> Result<ReadFile, ValidationError> {
    let mut counts = Map::new();
    let mut first_seen: HashMap<&str, u64> = HashMap::new();
    for (line, fields) in body {
        let name = fields[cause].trim();
        let cause = match broad_cause(name, age_group) {
            Ok(cause) => cause,
            Err(hint) => {
                errors.push(format!(
                    "line {line}, column {}: '{name}' is not a broad cause of age group {}{hint}",
                    cause + 1,
                    age_group.as_str()
                ));
                continue;
            }
        };
        if let Some(first) = first_seen.insert(cause, *line) {
            errors.push(format!(
                "line {line}: cause '{cause}' appears more than once (first on line {first})"
            ));
        }
        let text = fields[deaths].trim();
        match text.parse::<u64>() {
            Ok(n) => {
                counts.insert(cause.to_string(), json!(n));
            }
            Err(_) => errors.push(format!(
                "line {line}, column {}: deaths must be a whole number of at least 0, got '{text}'",
                deaths + 1
            )),
        }
        if errors.full() {
            break;
        }
    }
    errors.into_result(ReadFile {
        form: FileForm::Counts,
        va_data: Value::Object(counts),
        unspecified: 0,
    })
}

/// The age group and rules a request body asks for (defaults where it says nothing or
/// something invalid: its own validation reports that).
pub fn setting_of(body: &Map<String, Value>) -> (AgeGroup, Rules) {
    let age_group = body
        .get("age_group")
        .and_then(Value::as_str)
        .and_then(AgeGroup::parse)
        .unwrap_or(DEFAULT_AGE_GROUP);
    let rules = body
        .get("rules")
        .and_then(Value::as_str)
        .and_then(Rules::parse)
        .unwrap_or_default();
    (age_group, rules)
}

/// The `request` part of a multipart upload: a JSON object (empty when absent).
pub fn request_part(bytes: Option<&[u8]>) -> Result<Map<String, Value>, ValidationError> {
    match bytes.map(serde_json::from_slice::<Value>) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(body))) => Ok(body),
        Some(Ok(_)) => Err(ValidationError::single("request", "must be a JSON object")),
        Some(Err(e)) => Err(ValidationError::single(
            "request",
            format!("is not valid JSON: {e}"),
        )),
    }
}

/// The JSON body of an upload: `request` with each file part `va_data.<algorithm>` read into
/// its `va_data`. A file replaces the request's data for the same algorithm.
pub fn body_from_parts(
    mut body: Map<String, Value>,
    files: &[(String, Vec<u8>)],
) -> Result<Value, ValidationError> {
    if files.is_empty() {
        return Ok(Value::Object(body));
    }
    let (age_group, rules) = setting_of(&body);
    let mut va_data = match body.remove("va_data") {
        Some(Value::Object(va)) => va,
        _ => Map::new(),
    };
    let mut errors = Vec::new();
    for (part, bytes) in files {
        let algorithm = part.strip_prefix("va_data.").unwrap_or(part);
        match read_file(part, bytes, age_group, rules) {
            Ok(read) => {
                va_data.insert(algorithm.to_string(), read.va_data);
            }
            Err(e) => errors.extend(e.errors),
        }
    }
    if !errors.is_empty() {
        return Err(ValidationError { errors });
    }
    body.insert("va_data".into(), Value::Object(va_data));
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::validate_job_request;
    use crate::Config;

    /// The bundled COMSA output of an algorithm as a long CSV with its original labels.
    fn example_csv(algorithm: &str) -> String {
        let example = data::example_output(AgeGroup::Neonate, algorithm).unwrap();
        let mut csv = String::from("ID,cause1\r\n");
        for (id, cause) in example.ids.iter().zip(&example.causes) {
            csv.push_str(&format!("{id},\"{cause}\"\r\n"));
        }
        csv
    }

    fn cache_key(body: &Value) -> String {
        validate_job_request(body, &Config::default(), "")
            .unwrap_or_else(|e| panic!("{}", e.detail()))
            .cache_key
    }

    fn upload(files: &[(&str, &str)], request: Value) -> Result<Value, ValidationError> {
        let files: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(part, text)| (part.to_string(), text.as_bytes().to_vec()))
            .collect();
        body_from_parts(request.as_object().unwrap().clone(), &files)
    }

    fn messages(result: Result<Value, ValidationError>) -> Vec<String> {
        result
            .expect_err("refused")
            .errors
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn the_bundled_example_as_files_is_the_example() {
        let setting = json!({"age_group": "neonate", "country": "Mozambique"});
        for algorithm in ["eava", "insilicova", "interva"] {
            let part = format!("va_data.{algorithm}");
            let body = upload(&[(&part, &example_csv(algorithm))], setting.clone()).unwrap();
            let mut example = setting.clone();
            example["va_data"] = json!({algorithm: "use_example"});
            assert_eq!(cache_key(&body), cache_key(&example), "{algorithm}");
        }
    }

    #[test]
    fn the_same_deaths_as_long_wide_and_counts_files_are_one_request() {
        let setting = json!({"age_group": "neonate"});
        let long = "id;cause\n1;Prematurity\n2;birth asphyxia\n3;Neonatal sepsis\n4;Unspecified\n";
        let wide = "\u{feff}ID\tprematurity\tipre\tsepsis_meningitis_inf\r\na\t1\t0\t0\r\nb\t0\t1\t0\r\nc\t0\t0\t1\r\n";
        let counts = "cause,deaths\nprematurity,1\nIPRE,1\nsepsis_meningitis_inf,1\npneumonia,0\n";
        let keys: Vec<String> = [long, wide, counts]
            .iter()
            .map(|file| cache_key(&upload(&[("va_data.eava", file)], setting.clone()).unwrap()))
            .collect();
        assert_eq!(keys[0], keys[1]);
        assert_eq!(keys[0], keys[2]);
        let read = read_file(
            "va_data.eava",
            long.as_bytes(),
            AgeGroup::Neonate,
            Rules::V2_3_1,
        );
        assert_eq!(read.unwrap().unspecified, 1);
    }

    #[test]
    fn an_unknown_label_names_its_line_and_the_closest_labels() {
        let file = "ID,cause\n1,Prematurity\n2,neonatal sepsis \n3,Neonatal sepsis\n";
        assert_eq!(
            messages(upload(&[("va_data.eava", file)], json!({}))),
            [
                "va_data.eava: line 3: unknown cause 'neonatal sepsis ' for age group neonate \
              (did you mean 'neonatal sepsis'?)"
            ]
        );
    }

    #[test]
    fn every_bad_file_is_refused_with_its_line_and_column() {
        let cases: [(&[u8], &str); 11] = [
            (b"", "the file is empty"),
            (b"ID,cause\n", "the file has a header but no rows"),
            (b"ID,cause\n1,Prematurity\n2;Prematurity\n", "line 3: has 1 fields where the header has 2 (comma separated)"),
            (b"ID,cause\n1,Prematur\xffity\n", "line 2, column 2: is not UTF-8 text"),
            (b"ID,ipre,other\n1,0,2\n", "line 2, column 3 (other): must be 0 or 1, got '2'"),
            (b"ID,ipre,other\n1,1,1\n", "line 2: each death needs exactly one 1 (its cause), this row has 2"),
            (b"cause,deaths\nipre,-3\n", "line 2, column 2: deaths must be a whole number of at least 0, got '-3'"),
            (b"cause,count\nipre,2.5\n", "line 2, column 2: deaths must be a whole number of at least 0, got '2.5'"),
            (b"ID,cause\n7,ipre\n8,other\n7,ipre\n", "line 4: ID '7' appears more than once (first on line 2)"),
            (b"ID,prematurty\n1,1\n", "line 1, column 2: 'prematurty' is not a broad cause of age group neonate (did you mean 'prematurity'?)"),
            (b"name,age\nx,3\n", "line 1: cannot tell the file's form from its header 'name,age'"),
        ];
        for (file, expected) in cases {
            let files = [("va_data.eava".to_string(), file.to_vec())];
            let got = messages(body_from_parts(Map::new(), &files));
            assert!(
                got.iter()
                    .any(|m| m.starts_with(&format!("va_data.eava: {expected}"))),
                "{}: {got:?}",
                String::from_utf8_lossy(file)
            );
        }
    }

    #[test]
    fn broad_labels_need_the_2_3_1_rules() {
        let file = "ID,cause\n1,ipre\n2,sepsis_meningitis_inf\n";
        assert!(upload(&[("va_data.eava", file)], json!({})).is_ok());
        let got = messages(upload(&[("va_data.eava", file)], json!({"rules": "2.2"})));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[1].contains("unknown cause 'sepsis_meningitis_inf'"),
            "{got:?}"
        );
    }

    #[test]
    fn the_request_part_must_be_a_json_object() {
        let got = request_part(Some(b"[1]")).unwrap_err();
        assert_eq!(got.detail(), "request: must be a JSON object");
        assert!(request_part(Some(b"{")).is_err());
        assert_eq!(request_part(None).unwrap(), Map::new());
        let body = request_part(Some(br#"{"va_data": {"eava": [1,2,3,4,5,6]}}"#)).unwrap();
        assert_eq!(body_from_parts(body, &[]).unwrap()["va_data"]["eava"][5], 6);
    }
}
