//! `POST /api/v1/validate`: what a calibration of a request would start from (the data each
//! algorithm's file or JSON gives, the causes left uncalibrated and why, the settings, the
//! warnings known before sampling), without running it.

use indexmap::IndexMap;
use serde_json::{Map, Value};
use vacal_contract as wire;
use vacal_engine::prepare::{outside_learn_band, prepare};
use vacal_engine::request::{DonotcalibType, Rules};
use vacal_engine::STALL_SHARE_BELOW;

use crate::result::resolved_settings;
use crate::upload::{read_file, setting_of};
use crate::validation::validate_job_request;
use crate::Config;

/// The preview of a request given as a JSON body (`request`) and file parts.
pub fn preview(
    request: Map<String, Value>,
    files: &[(String, Vec<u8>)],
    config: &Config,
) -> wire::ValidationPreview {
    let mut body = request;
    let (age_group, rules) = setting_of(&body);
    let mut errors: Vec<wire::FieldError> = Vec::new();
    let mut forms: IndexMap<String, (String, u64)> = IndexMap::new();
    if !files.is_empty() {
        let mut va_data = match body.remove("va_data") {
            Some(Value::Object(va)) => va,
            _ => Map::new(),
        };
        for (part, bytes) in files {
            let algorithm = part.strip_prefix("va_data.").unwrap_or(part).to_string();
            match read_file(part, bytes, age_group, rules) {
                Ok(read) => {
                    forms.insert(
                        algorithm.clone(),
                        (read.form.as_str().to_string(), read.unspecified as u64),
                    );
                    va_data.insert(algorithm, read.va_data);
                }
                Err(e) => errors.extend(e.errors),
            }
        }
        body.insert("va_data".into(), Value::Object(va_data));
    }
    let mut preview = wire::ValidationPreview {
        valid: false,
        errors,
        algorithms: IndexMap::new(),
        settings: None,
        warnings: Vec::new(),
    };
    if !preview.errors.is_empty() {
        return preview;
    }
    let valid = match validate_job_request(&Value::Object(body), config, "") {
        Ok(valid) => valid,
        Err(e) => {
            preview.errors = e.errors;
            return preview;
        }
    };
    // validate_job_request has prepared this request already, so this cannot fail.
    let Ok(prepared) = prepare(&valid.request) else {
        return preview;
    };
    let learn = valid.request.donotcalib_type == DonotcalibType::Learn;
    for (k, algorithm) in prepared.algorithms.iter().enumerate() {
        let deaths = &prepared.deaths[k];
        let total: f64 = deaths.iter().sum();
        let mut not_calibrated = IndexMap::new();
        for (j, cause) in prepared.causes.iter().enumerate() {
            if !prepared.donotcalib_tomodel[k][j] {
                // The share below which a stall warning would name the cause.
                if deaths[j] < STALL_SHARE_BELOW * total {
                    // 2.3.1's learn screen leaves such causes out; with its fixed screening
                    // (or under 2.2) they stay in.
                    let or_rules = if rules == Rules::V2_2 {
                        ", or use \"rules\": \"2.3.1\""
                    } else {
                        ""
                    };
                    preview.warnings.push(format!(
                        "{algorithm}: {cause} has {} of {total} deaths (under 1%) and will be \
                         calibrated: the path correction may stall (λ at 0.99), leaving the \
                         CSMF uncalibrated with too narrow an interval; leave it out with \
                         donotcalib{or_rules}",
                        deaths[j]
                    ));
                }
                continue;
            }
            let share = prepared.p_uncalib[k][j];
            let reason = if prepared.donotcalib_study[k][j] {
                "donotcalib"
            } else if learn && rules == Rules::V2_3_1 && deaths[j] == 0.0 {
                "zero deaths"
            } else if learn && rules == Rules::V2_3_1 && outside_learn_band(share) {
                "uncalibrated CSMF outside [0.01, 0.99] (2.3.1 rule)"
            } else {
                "learn screen (the misclassification rates barely differ)"
            };
            not_calibrated.insert(cause.clone(), reason.to_string());
        }
        let calibrated = prepared.calibrated(k);
        if !calibrated {
            preview.warnings.push(format!(
                "{algorithm}: fewer than 2 causes to calibrate, so it will not be calibrated"
            ));
        }
        let (form, unspecified) = forms
            .get(algorithm)
            .cloned()
            .unwrap_or_else(|| ("json".to_string(), 0));
        preview.algorithms.insert(
            algorithm.clone(),
            wire::AlgorithmPreview {
                form,
                deaths: wire::Amount(total),
                unspecified_dropped: unspecified,
                counts: prepared
                    .causes
                    .iter()
                    .zip(deaths)
                    .map(|(c, d)| (c.clone(), wire::Amount(*d)))
                    .collect(),
                calibrated,
                not_calibrated,
            },
        );
    }
    preview.settings = Some(resolved_settings(
        &valid.request,
        &prepared.algorithms,
        prepared.ensemble,
        prepared.pshrink_strength,
    ));
    preview.valid = true;
    preview
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn of(body: Value, files: &[(&str, &str)]) -> wire::ValidationPreview {
        let files: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect();
        preview(
            body.as_object().unwrap().clone(),
            &files,
            &Config::default(),
        )
    }

    #[test]
    fn a_file_is_previewed_with_its_counts_and_the_causes_left_out() {
        let file = "ID,cause\n1,Prematurity\n2,Prematurity\n3,Neonatal sepsis\n4,Unspecified\n\
                    5,birth asphyxia\n6,Birth asphyxia\n";
        let p = of(json!({"age_group": "neonate"}), &[("va_data.eava", file)]);
        assert!(p.valid, "{:?}", p.errors);
        let eava = &p.algorithms["eava"];
        assert_eq!(
            (eava.form.as_str(), eava.deaths.0, eava.unspecified_dropped),
            ("long", 5.0, 1)
        );
        assert_eq!(eava.counts["prematurity"].0, 2.0);
        assert_eq!(eava.not_calibrated["other"], "donotcalib");
        assert_eq!(eava.not_calibrated["pneumonia"], "zero deaths");
        assert_eq!(p.settings.as_ref().unwrap()["rules"], "2.3.1");
    }

    #[test]
    fn under_2_2_a_rare_calibrated_cause_is_warned_about() {
        let p = of(
            json!({"va_data": {"eava": [44, 0, 267, 268, 29, 164]}, "rules": "2.2"}),
            &[],
        );
        assert!(p.valid);
        assert!(p.algorithms["eava"]
            .not_calibrated
            .get("pneumonia")
            .is_none());
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].starts_with("eava: pneumonia has 0 of 772 deaths"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn under_2_3_1_with_fixed_screening_a_rare_cause_is_warned_about_too() {
        let p = of(
            json!({"va_data": {"eava": [44, 0, 267, 268, 29, 164]}, "donotcalib_type": "fixed"}),
            &[],
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].ends_with("leave it out with donotcalib"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn errors_are_listed_not_refused() {
        let p = of(
            json!({}),
            &[("va_data.eava", "ID,cause\n1,Prematurity\n1,pneumonia\n")],
        );
        assert!(!p.valid);
        assert_eq!(p.errors[0].field, "va_data.eava");
        assert!(p.errors[0]
            .message
            .starts_with("line 3: ID '1' appears more than once"));
        let p = of(json!({"age_group": "adult"}), &[]);
        assert!(!p.valid);
        assert_eq!(p.errors[0].field, "age_group");
        assert!(p.settings.is_none());
    }
}
