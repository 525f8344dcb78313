//! What a request can name: age groups and their causes, algorithms, countries, matrix types,
//! rules and defaults, and the cause_map tables (`GET /api/v1/reference`).

use indexmap::IndexMap;
use vacal_contract as wire;
use vacal_engine::data::{self, COUNTRIES, STORED_ALGORITHMS};
use vacal_engine::request::{DonotcalibType, MmatType, Rules};
use vacal_engine::{AgeGroup, CalibrationRequest};

use crate::validation::{DEFAULT_AGE_GROUP, DEFAULT_COUNTRY};

fn wire_age_group(age_group: AgeGroup) -> wire::AgeGroup {
    match age_group {
        AgeGroup::Neonate => wire::AgeGroup::Neonate,
        AgeGroup::Child => wire::AgeGroup::Child,
    }
}

fn wire_rules(rules: Rules) -> wire::Rules {
    match rules {
        Rules::V2_3_1 => wire::Rules::V2_3_1,
        Rules::V2_2 => wire::Rules::V2_2,
    }
}

fn wire_mmat_type(mmat_type: MmatType) -> Option<wire::MmatType> {
    match mmat_type {
        MmatType::Prior => Some(wire::MmatType::Prior),
        MmatType::Fixed => Some(wire::MmatType::Fixed),
        // Only with the request's own sample matrices.
        MmatType::Samples => None,
    }
}

const AGE_GROUPS: [AgeGroup; 2] = [AgeGroup::Neonate, AgeGroup::Child];

/// `GET /api/v1/reference`.
pub fn reference() -> wire::ReferenceResponse {
    let request = CalibrationRequest::default();
    let mcmc = &request.mcmc;
    wire::ReferenceResponse {
        age_groups: AGE_GROUPS
            .iter()
            .map(|&a| wire::AgeGroupReference {
                age_group: wire_age_group(a),
                causes: a.causes().to_vec(),
            })
            .collect(),
        algorithms: STORED_ALGORITHMS.iter().map(|a| a.to_string()).collect(),
        countries: COUNTRIES.iter().map(|c| c.to_string()).collect(),
        matrix_types: [MmatType::Prior, MmatType::Fixed]
            .into_iter()
            .filter_map(wire_mmat_type)
            .collect(),
        rules: Rules::ALL.into_iter().map(wire_rules).collect(),
        defaults: wire::RequestDefaults {
            age_group: wire_age_group(DEFAULT_AGE_GROUP),
            country: DEFAULT_COUNTRY.to_string(),
            mmat_type: wire_mmat_type(request.mmat_type).unwrap_or(wire::MmatType::Prior),
            rules: wire_rules(request.rules),
            donotcalib: vec!["other".to_string()],
            donotcalib_type: DonotcalibType::Learn.as_str().to_string(),
            nocalib_threshold: request.nocalib_threshold,
            path_correction: request.path_correction,
            n_mcmc: mcmc.n_mcmc,
            n_burn: mcmc.n_burn,
            n_thin: mcmc.n_thin,
            n_chain: mcmc.n_chain,
            seed: mcmc.seed,
            sampler: mcmc.sampler.as_str().to_string(),
        },
    }
}

/// `GET /api/v1/reference/cause-map/{age_group}`; `None` for an unknown age group.
pub fn cause_map(age_group: &str) -> Option<wire::CauseMapResponse> {
    let age_group = AgeGroup::parse(age_group)?;
    let map = data::cause_map(age_group);
    let mut labels: Vec<(&String, &String)> = map.lookup.iter().collect();
    labels.sort();
    Some(wire::CauseMapResponse {
        age_group: wire_age_group(age_group),
        causes: map.broad_causes.clone(),
        labels: labels
            .into_iter()
            .map(|(label, broad)| (label.clone(), broad.clone()))
            .collect(),
        labels_2_3_1: data::labels_added_in_2_3_1(age_group)
            .iter()
            .map(|(label, broad)| (label.to_string(), broad.to_string()))
            .collect::<IndexMap<_, _>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_what_requests_accept() {
        let r = reference();
        assert_eq!(r.age_groups[0].causes[2], "sepsis_meningitis_inf");
        assert_eq!(r.age_groups[1].causes.len(), 9);
        assert_eq!(r.algorithms, ["eava", "insilicova", "interva"]);
        assert!(r.countries.contains(&"Sierra Leone".to_string()));
        assert_eq!(r.rules, [wire::Rules::V2_3_1, wire::Rules::V2_2]);
        assert_eq!(r.defaults.rules, wire::Rules::V2_3_1);
        assert_eq!(r.defaults.country, "Mozambique");
        assert_eq!((r.defaults.n_mcmc, r.defaults.n_chain), (5000, 4));
    }

    #[test]
    fn the_cause_map_lists_every_label_in_order() {
        let map = cause_map("child").unwrap();
        assert_eq!(map.labels["diarrhea/dysentery"], "diarrhea");
        assert_eq!(map.labels_2_3_1["diarrhea"], "diarrhea");
        let labels: Vec<&String> = map.labels.keys().collect();
        assert!(labels.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            cause_map("neonate").unwrap().labels["birth asphyxia"],
            "ipre"
        );
        assert!(cause_map("adult").is_none());
    }
}
