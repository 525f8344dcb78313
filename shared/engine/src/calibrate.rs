//! `calibrate`: the whole of `vacalibration()` (§6–§10 on top of `prepare`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;

use crate::diagnostics::{diagnose_samples, SamplesDiagnostics};
use crate::error::{panic_message, EngineError};
use crate::gibbs::GibbsSampler;
use crate::independence::{self, IndependenceSampler};
use crate::mcmc::{McmcSettings, Sampler, Samples};
use crate::model::{AlgorithmTerm, Misclassification, ModelSpec};
use crate::numeric::{quantile, smart_round};
use crate::nuts::NutsSampler;
use crate::pathcorr::{path_correct_dirichlet, path_correct_fixed};
use crate::prepare::{prepare, NamedMatrix, Prepared};
use crate::request::{CalibrationRequest, McmcRequest, MmatType, Rules, SamplerKind};
use crate::tempering::{multimodal_coordinates, TemperingSampler};

/// Receives progress and lets the caller stop a run. Called from the sampler's threads.
pub trait Progress: Sync {
    /// A named step has started.
    fn step(&self, _name: &str) {}
    /// Polled often; returning true stops the run with `EngineError::Cancelled`.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// A `Progress` that ignores steps and never cancels.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Dirichlet parameters below this make NUTS's geometry heavy-tailed (the logit of a
/// Beta(α, ·) stick fraction has a spread of about 1/α), so `auto` uses the Gibbs sampler instead.
/// Stored CHAMPS parameters are all above 0.28; studycause_map's ε-expansion makes ≈ 0.006.
pub const AUTO_GIBBS_BELOW_ALPHA: f64 = 0.1;
/// Gibbs sweeps per retained draw when `auto` picks Gibbs: it mixes at 4–13 % ESS per sweep
/// on such models, so this keeps the ESS per retained draw near NUTS's.
pub const AUTO_GIBBS_THIN: u64 = 25;

/// A max split R-hat above this says the chains have not mixed (Vehtari et al. 2021,
/// "Rank-normalization, folding, and localization", the threshold Stan and arviz warn at).
pub const RHAT_WARNING_ABOVE: f64 = 1.01;
/// Below this bulk ESS per chain, R-hat and the summaries are themselves unreliable (same paper).
pub const ESS_PER_CHAIN_WARNING_BELOW: f64 = 100.0;

/// Convergence diagnostics of one MCMC fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics {
    /// The sampler that produced the draws: "nuts", "gibbs", "independence" or "tempering".
    pub sampler: &'static str,
    /// Largest rank-normalised split R-hat over the calibrated causes.
    pub max_rhat: f64,
    /// Smallest bulk effective sample size over the calibrated causes.
    pub min_ess_bulk: f64,
    pub divergences: usize,
    pub max_depth_hits: usize,
    /// Retained draws over all chains.
    pub draws: usize,
    /// Chains the draws came from.
    pub chains: usize,
    pub seconds: f64,
    /// Causes whose chains found different modes in the usual sampler's fit, after which
    /// parallel tempering was run (its draws are reported when `sampler` is "tempering").
    /// Indices into the calibration's causes (a sampler gives them in its own coordinates;
    /// `calibrate` maps them). Empty when the chains agreed.
    pub multimodal_causes: Vec<usize>,
}

impl Diagnostics {
    /// What a user should know before trusting this fit, one sentence per problem; empty when
    /// it looks converged.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let min_ess = ESS_PER_CHAIN_WARNING_BELOW * self.chains as f64;
        if self.max_rhat.is_nan() || self.min_ess_bulk.is_nan() {
            warnings.push(
                "R-hat and bulk ESS could not be computed (too few draws per chain), so \
                 convergence is unknown: raise n_mcmc"
                    .to_string(),
            );
        } else {
            if self.max_rhat > RHAT_WARNING_ABOVE {
                warnings.push(format!(
                    "max R-hat {:.3} is above {RHAT_WARNING_ABOVE}: the chains disagree, so the \
                     calibrated CSMF may be wrong (the posterior may have several modes, or the \
                     chains need more draws: raise n_mcmc or n_thin)",
                    self.max_rhat
                ));
            }
            if self.min_ess_bulk < min_ess {
                warnings.push(format!(
                    "min bulk ESS {:.0} is below {min_ess:.0} ({ESS_PER_CHAIN_WARNING_BELOW:.0} \
                     per chain): the means and intervals carry a large Monte Carlo error (raise \
                     n_mcmc or n_thin)",
                    self.min_ess_bulk
                ));
            }
        }
        if self.divergences > 0 {
            let plural = if self.divergences == 1 { "" } else { "s" };
            warnings.push(format!(
                "{} divergent transition{plural} after warm-up: the sampler may have missed \
                 part of the posterior",
                self.divergences
            ));
        }
        warnings
    }
}

/// λ at or above this is the top of the path-correction grid (0.99; 1.00 for `fixed`): the
/// matrix the model uses is almost the identity, so the fit cannot move the CSMF.
pub const STALLED_LAMBDA: f64 = 0.99 - 1e-9;
/// Calibrated causes with a smaller share of an algorithm's deaths are named as the likely
/// cause of a stall (2.3.1's learn screen leaves out the same ones).
pub const STALL_SHARE_BELOW: f64 = 0.01;

/// What the path correction did for one calibrated algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathCorrection {
    pub lambda: f64,
    /// λ stayed at the top of the grid: the "calibrated" CSMF is the uncalibrated one and its
    /// interval shows only sampling noise.
    pub stalled: bool,
}

/// One output row: an algorithm, or the ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    pub name: String,
    pub uncalibrated: Vec<f64>,
    pub mean: Vec<f64>,
    pub lower_ci: Vec<f64>,
    pub upper_ci: Vec<f64>,
    /// Whether MCMC calibration ran for this row (|S| > 1).
    pub calibrated: bool,
    /// Per cause: in the calibrated set S (not excluded by donotcalib or the screening).
    pub calibrated_causes: Vec<bool>,
    pub uncalibrated_percentage: Vec<f64>,
    pub calibrated_percentage: Vec<f64>,
    pub diagnostics: Option<Diagnostics>,
}

/// Everything `vacalibration()` returns except the raw draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub causes: Vec<String>,
    pub algorithms: Vec<String>,
    /// The algorithms in input order, then `ensemble` when it ran.
    pub rows: Vec<RowResult>,
    pub ensemble: bool,
    pub deaths_uncalibrated: Vec<Vec<f64>>,
    pub deaths_calibrated: Vec<Vec<f64>>,
    pub deaths_calibrated_ensemble: Option<Vec<Vec<f64>>>,
    /// `None` for an algorithm that was not calibrated.
    pub lambda: Vec<Option<f64>>,
    /// Per algorithm; `None` where no path correction ran (not calibrated, or turned off).
    pub path_correction: Vec<Option<PathCorrection>>,
    pub rules: Rules,
    pub mmat_input: Vec<NamedMatrix>,
    pub mmat_study: Vec<Vec<Vec<f64>>>,
    /// Per algorithm, C × C; `None` entries are R's NA.
    pub mmat_tomodel: Vec<Vec<Vec<Option<f64>>>>,
    pub donotcalib_study: Vec<Vec<bool>>,
    pub pshrink_strength: f64,
    pub mmat_type: MmatType,
}

impl Calibration {
    /// Each row's warnings (a stalled path correction, then its fit's
    /// [`Diagnostics::warnings`]), prefixed with the row (algorithm or `ensemble`).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (r, row) in self.rows.iter().enumerate() {
            let stall = if r < self.algorithms.len() {
                self.stall_warning(r)
            } else {
                self.ensemble_stall_warning()
            };
            let modes = row.diagnostics.as_ref().and_then(|d| self.modes_warning(d));
            let fit = row.diagnostics.iter().flat_map(Diagnostics::warnings);
            warnings.extend(
                stall
                    .into_iter()
                    .chain(modes)
                    .chain(fit)
                    .map(|w| format!("{}: {w}", row.name)),
            );
        }
        warnings
    }

    /// A posterior with several modes: which causes, and what was reported.
    fn modes_warning(&self, d: &Diagnostics) -> Option<String> {
        if d.multimodal_causes.is_empty() {
            return None;
        }
        let names: Vec<&str> = d
            .multimodal_causes
            .iter()
            .map(|&j| self.causes[j].as_str())
            .collect();
        let outcome = if d.sampler == "tempering" {
            "parallel tempering was run to weigh the modes, and its draws are reported: the \
             intervals span both modes"
        } else {
            "parallel tempering was run to weigh the modes but did not converge either, so the \
             usual sampler's draws are reported: do not use this row as it is"
        };
        Some(format!(
            "the posterior has several modes in {}: the usual sampler's chains each settled in \
             one; {outcome}",
            names.join(" and ")
        ))
    }

    fn stalled(&self, k: usize) -> bool {
        self.path_correction[k].is_some_and(|pc| pc.stalled)
    }

    /// What a stall of algorithm `k` means, its likely cause and what to do.
    fn stall_warning(&self, k: usize) -> Option<String> {
        if !self.stalled(k) {
            return None;
        }
        let deaths = &self.deaths_uncalibrated[k];
        let total: f64 = deaths.iter().sum();
        let rare: Vec<usize> = (0..self.causes.len())
            .filter(|&j| self.rows[k].calibrated_causes[j] && deaths[j] < STALL_SHARE_BELOW * total)
            .collect();
        let lambda = self.lambda[k].unwrap_or(f64::NAN);
        let mut text = format!(
            "the path correction stalled: λ stayed at {lambda:.2}, the top of its grid, so the \
             misclassification matrix the model used is almost the identity. The calibrated \
             CSMF is therefore about the uncalibrated one, and its 95% interval shows only \
             sampling noise: it is too narrow and does not reflect misclassification."
        );
        if rare.is_empty() {
            text.push_str(
                " No calibrated cause has fewer than 1% of the deaths: the uncalibrated CSMF is \
                 one this misclassification matrix cannot produce. Consider leaving out causes \
                 with donotcalib, or another matrix type.",
            );
            return Some(text);
        }
        let described: Vec<String> = rare
            .iter()
            .map(|&j| format!("{} ({} of {total} deaths)", self.causes[j], deaths[j]))
            .collect();
        // The request's own donotcalib list plus the rare causes, ready to paste.
        let left_out: Vec<String> = (0..self.causes.len())
            .filter(|&j| self.donotcalib_study[k][j] || rare.contains(&j))
            .map(|j| format!("\"{}\"", self.causes[j]))
            .collect();
        text.push_str(&format!(
            " Likely cause: calibrated cause(s) with fewer than 1% of the deaths: {}. Leave them \
             out with donotcalib (\"donotcalib\": {{\"{}\": [{}]}})",
            described.join(", "),
            self.algorithms[k],
            left_out.join(", ")
        ));
        if self.rules == Rules::V2_2 {
            text.push_str(", or use \"rules\": \"2.3.1\", whose learn screen leaves them out");
        }
        text.push('.');
        Some(text)
    }

    /// An ensemble built on stalled algorithms inherits their uncalibrated parts.
    fn ensemble_stall_warning(&self) -> Option<String> {
        let stalled: Vec<&str> = (0..self.algorithms.len())
            .filter(|&k| self.stalled(k))
            .map(|k| self.algorithms[k].as_str())
            .collect();
        (!stalled.is_empty()).then(|| {
            format!(
                "built on algorithm(s) whose path correction stalled: {}. Their part of the \
                 ensemble is uncalibrated and its interval too narrow (see their warnings).",
                stalled.join(", ")
            )
        })
    }
}

/// splitmix64: independent seeds for the path correction and each fit from one request seed.
fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sampler settings for a request: `n_mcmc` and `n_burn` are totals split over the chains.
pub fn mcmc_settings(m: &McmcRequest, seed: u64) -> McmcSettings {
    let chains = m.n_chain.max(1) as usize;
    McmcSettings {
        chains,
        warmup_per_chain: (m.n_burn as usize).div_ceil(chains),
        draws_per_chain: (m.n_mcmc as usize).div_ceil(chains),
        thin: m.n_thin.max(1) as usize,
        seed,
        target_accept: 0.9,
        max_depth: 10,
        threads: None,
    }
}

fn identity(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect()
}

fn subset(v: &[f64], idx: &[usize]) -> Vec<f64> {
    idx.iter().map(|&i| v[i]).collect()
}

fn block(m: &[Vec<f64>], idx: &[usize]) -> Vec<Vec<f64>> {
    idx.iter().map(|&i| subset(&m[i], idx)).collect()
}

fn normalised(v: &[f64]) -> Vec<f64> {
    let s: f64 = v.iter().sum();
    v.iter().map(|x| x / s).collect()
}

/// What the calibrated draws say, in the full cause order.
struct Summary {
    mean: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
}

/// §8.1: draws over the sampled causes `s_idx` → calibrated CSMF summaries over all causes.
/// Each draw is renormalised over S and scaled by D; causes outside S keep `pu`.
fn summarise(samples: &Samples, s_idx: &[usize], pu: &[f64]) -> Summary {
    let d: f64 = s_idx.iter().map(|&j| pu[j]).sum();
    let mut mean = pu.to_vec();
    let mut lower = pu.to_vec();
    let mut upper = pu.to_vec();
    let draws: Vec<&Vec<f64>> = samples.chains.iter().flat_map(|c| c.draws.iter()).collect();
    let mut column = Vec::with_capacity(draws.len());
    for (pos, &j) in s_idx.iter().enumerate() {
        column.clear();
        column.extend(draws.iter().map(|draw| {
            let total: f64 = draw.iter().sum();
            d * draw[pos] / total
        }));
        mean[j] = column.iter().sum::<f64>() / column.len() as f64;
        lower[j] = quantile(&mut column, 0.025);
        upper[j] = quantile(&mut column, 0.975);
    }
    Summary { mean, lower, upper }
}

/// §8.2: observed deaths redistributed over S with the calibrated CSMF.
fn calibrated_deaths(observed: &[f64], s_idx: &[usize], mean: &[f64], pu: &[f64]) -> Vec<f64> {
    let d: f64 = s_idx.iter().map(|&j| pu[j]).sum();
    let n_s: f64 = s_idx.iter().map(|&j| observed[j]).sum();
    let mut out = observed.to_vec();
    if n_s <= 0.0 {
        return out;
    }
    let x: Vec<f64> = s_idx.iter().map(|&j| n_s * mean[j] / d).collect();
    for (&j, v) in s_idx.iter().zip(smart_round(&x, n_s)) {
        out[j] = v;
    }
    out
}

fn percentages(p: &[f64]) -> Vec<f64> {
    smart_round(&p.iter().map(|x| 100.0 * x).collect::<Vec<_>>(), 100.0)
}

/// The smallest Dirichlet parameter the model samples with (calibrated blocks only).
fn smallest_alpha(spec: &ModelSpec) -> f64 {
    spec.terms
        .iter()
        .filter_map(|t| match &t.misclassification {
            Misclassification::Dirichlet(alpha) => Some((t, alpha)),
            Misclassification::Fixed(_) => None,
        })
        .flat_map(|(t, alpha)| {
            alpha.iter().enumerate().flat_map(move |(i, row)| {
                row.iter()
                    .enumerate()
                    .filter(move |(j, _)| t.calibrated[i] && t.calibrated[*j])
                    .map(|(_, a)| *a)
            })
        })
        .fold(f64::INFINITY, f64::min)
}

fn run_sampler(
    spec: &ModelSpec,
    mcmc: &McmcRequest,
    fit: u64,
    progress: &dyn Progress,
) -> Result<(Samples, Diagnostics), EngineError> {
    let started = Instant::now();
    let mut settings = mcmc_settings(mcmc, derive_seed(mcmc.seed, fit));
    let cancel = || progress.is_cancelled();
    let whole_counts = spec
        .terms
        .iter()
        .all(|t| t.counts.iter().all(|c| c.fract() == 0.0));
    let chosen: &dyn Sampler = match mcmc.sampler {
        SamplerKind::Gibbs => &GibbsSampler,
        SamplerKind::Nuts => &NutsSampler,
        SamplerKind::Auto if whole_counts && smallest_alpha(spec) < AUTO_GIBBS_BELOW_ALPHA => {
            settings.thin *= AUTO_GIBBS_THIN as usize;
            &GibbsSampler
        }
        SamplerKind::Auto => match independence::plan(spec, settings.seed) {
            Some(plan) => &IndependenceSampler(plan),
            None => &NutsSampler,
        },
    };
    let samples = chosen.sample(spec, &settings, &cancel)?;
    let diag = diagnose_samples(&samples);
    let multimodal = multimodal_coordinates(&samples, &diag);
    let mut fit = (fit_diagnostics(chosen.name(), &samples, &diag), samples);
    if !multimodal.is_empty() {
        // The chains each found a different mode: parallel tempering moves between them and
        // weighs them. Whatever sampler was asked for, even an explicit "gibbs": its chains
        // disagreeing means its answer is wrong, and the diagnostics say which sampler the
        // draws come from. Tempering makes NUTS moves, so it takes NUTS's thinning, not the
        // Gibbs thinning `auto` adds.
        let tempering = TemperingSampler::default();
        let pt_settings = McmcSettings {
            thin: mcmc_settings(mcmc, settings.seed).thin,
            ..settings.clone()
        };
        let pt_samples = tempering.sample(spec, &pt_settings, &cancel)?;
        let pt_diag = diagnose_samples(&pt_samples);
        let pt_fit = (
            fit_diagnostics(tempering.name(), &pt_samples, &pt_diag),
            pt_samples,
        );
        if tempering_wins(&pt_fit.0, &fit.0) {
            fit = pt_fit;
        }
        fit.0.multimodal_causes = multimodal;
    }
    fit.0.seconds = started.elapsed().as_secs_f64();
    Ok((fit.1, fit.0))
}

/// The diagnostics of one sampler's draws (the run time is set by the caller).
fn fit_diagnostics(
    sampler: &'static str,
    samples: &Samples,
    diag: &SamplesDiagnostics,
) -> Diagnostics {
    Diagnostics {
        sampler,
        max_rhat: diag.max_rhat,
        min_ess_bulk: diag.min_ess_bulk,
        divergences: samples.chains.iter().map(|c| c.divergences).sum(),
        max_depth_hits: samples.chains.iter().map(|c| c.max_depth_hits).sum(),
        draws: samples.chains.iter().map(|c| c.draws.len()).sum(),
        chains: samples.chains.len(),
        seconds: 0.0,
        multimodal_causes: Vec::new(),
    }
}

/// Whether the tempering fit replaces the first one: it converged (R-hat at most the warning
/// threshold) with no fewer effective draws; failing that, whichever agrees better across its
/// chains (an undefined R-hat counts as the worst).
fn tempering_wins(tempering: &Diagnostics, first: &Diagnostics) -> bool {
    let rhat = |d: &Diagnostics| {
        if d.max_rhat.is_nan() {
            f64::INFINITY
        } else {
            d.max_rhat
        }
    };
    let passes = rhat(tempering) <= RHAT_WARNING_ABOVE
        && (first.min_ess_bulk.is_nan() || tempering.min_ess_bulk >= first.min_ess_bulk);
    passes || rhat(tempering) < rhat(first)
}

/// Passes progress through and stops the other fits once one has failed.
struct SharedProgress<'a> {
    inner: &'a dyn Progress,
    failed: AtomicBool,
}

impl Progress for SharedProgress<'_> {
    fn step(&self, name: &str) {
        self.inner.step(name);
    }
    fn is_cancelled(&self) -> bool {
        self.failed.load(Ordering::Relaxed) || self.inner.is_cancelled()
    }
}

type FitResult = Result<(Samples, Diagnostics), EngineError>;

/// Runs each fit on its own thread (with its own chain threads) from the moment its model is
/// ready. The fits are independent, and run together they keep every core busy through each
/// other's serial parts (path correction, pilot runs, diagnostics) and uneven chains.
struct Fits<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    mcmc: &'env McmcRequest,
    progress: &'env SharedProgress<'env>,
    running: Vec<ScopedJoinHandle<'scope, FitResult>>,
}

impl<'scope, 'env> Fits<'scope, 'env> {
    /// Starts fitting `spec` with the seeds of `stream`; returns the fit's index.
    fn start(&mut self, name: &str, spec: ModelSpec, stream: u64) -> usize {
        self.progress.step(&format!("Sampling {name}"));
        let (mcmc, progress, name) = (self.mcmc, self.progress, name.to_string());
        self.running.push(self.scope.spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                run_sampler(&spec, mcmc, stream, progress)
            }))
            .unwrap_or_else(|panic| {
                let msg = panic_message(&*panic);
                Err(EngineError::Sampler(format!(
                    "the {name} fit panicked: {msg}"
                )))
            });
            if matches!(result, Err(ref e) if *e != EngineError::Cancelled) {
                progress.failed.store(true, Ordering::Relaxed);
            }
            result
        }));
        self.running.len() - 1
    }

    /// Stops the fits early: the calibration failed elsewhere.
    fn abandon(&self) {
        self.progress.failed.store(true, Ordering::Relaxed);
    }

    /// Waits for every fit; the first real failure in start order is reported ahead of the
    /// cancellations it caused in the others.
    fn finish(self) -> Result<Vec<(Samples, Diagnostics)>, EngineError> {
        let results: Vec<FitResult> = self
            .running
            .into_iter()
            .map(|handle| {
                // The thread catches the fit's panics, so joining does not fail.
                handle
                    .join()
                    .unwrap_or_else(|_| Err(EngineError::Sampler("a fit panicked".into())))
            })
            .collect();
        if let Some(e) = results
            .iter()
            .find_map(|r| r.as_ref().err().filter(|e| **e != EngineError::Cancelled))
        {
            return Err(e.clone());
        }
        results.into_iter().collect()
    }
}

/// Runs the calibration of `request`: vacalibration 2.2's algorithm with this engine's sampler.
pub fn calibrate(
    request: &CalibrationRequest,
    progress: &dyn Progress,
) -> Result<Calibration, EngineError> {
    progress.step("Preparing data");
    let prepared = prepare(request)?;
    calibrate_prepared(&prepared, &request.mcmc, request.path_correction, progress)
}

/// The state after path correction for one algorithm.
struct Corrected {
    lambda: Option<f64>,
    /// C × C, `None` = NA.
    tomodel: Vec<Vec<Option<f64>>>,
}

fn path_correct(
    prepared: &Prepared,
    k: usize,
    path_correction: bool,
    rng: &mut ChaCha8Rng,
) -> Result<Corrected, EngineError> {
    let c = prepared.causes.len();
    let study = &prepared.mmat_study[k];
    let fixed = prepared.mmat_type == MmatType::Fixed;
    if !prepared.calibrated(k) {
        let tomodel = if fixed {
            identity(c)
                .into_iter()
                .map(|r| r.into_iter().map(Some).collect())
                .collect()
        } else {
            vec![vec![None; c]; c]
        };
        return Ok(Corrected {
            lambda: None,
            tomodel,
        });
    }
    let s_idx: Vec<usize> = (0..c)
        .filter(|&j| !prepared.donotcalib_tomodel[k][j])
        .collect();
    let q = normalised(&subset(&prepared.p_uncalib[k], &s_idx));
    let (lambda, new_block) = if fixed {
        let mut b = block(study, &s_idx);
        for row in &mut b {
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= s);
        }
        if path_correction {
            let pc = path_correct_fixed(&b, &q);
            (pc.lambda, pc.block)
        } else {
            (0.0, b)
        }
    } else if path_correction {
        let pc = path_correct_dirichlet(&block(study, &s_idx), &q, rng)?;
        (pc.lambda, pc.block)
    } else {
        (0.0, block(study, &s_idx))
    };
    // Outside the S × S block: the identity for fixed, Mmat_study otherwise (§6.1, §6.2).
    let mut tomodel: Vec<Vec<Option<f64>>> = if fixed {
        identity(c)
            .into_iter()
            .map(|r| r.into_iter().map(Some).collect())
            .collect()
    } else {
        study
            .iter()
            .map(|r| r.iter().copied().map(Some).collect())
            .collect()
    };
    for (a, &i) in s_idx.iter().enumerate() {
        for (b, &j) in s_idx.iter().enumerate() {
            tomodel[i][j] = Some(new_block[a][b]);
        }
    }
    Ok(Corrected {
        lambda: Some(lambda),
        tomodel,
    })
}

fn unwrap_matrix(m: &[Vec<Option<f64>>]) -> Vec<Vec<f64>> {
    m.iter()
        .map(|r| r.iter().map(|x| x.unwrap_or(0.0)).collect())
        .collect()
}

fn uncalibrated_row(name: &str, pu: &[f64], calibrated_causes: Vec<bool>) -> RowResult {
    RowResult {
        name: name.to_string(),
        uncalibrated: pu.to_vec(),
        mean: pu.to_vec(),
        lower_ci: pu.to_vec(),
        upper_ci: pu.to_vec(),
        calibrated: false,
        calibrated_causes,
        uncalibrated_percentage: percentages(pu),
        calibrated_percentage: percentages(pu),
        diagnostics: None,
    }
}

fn calibrated_row(
    name: &str,
    pu: &[f64],
    summary: Summary,
    calibrated_causes: Vec<bool>,
    diagnostics: Diagnostics,
) -> RowResult {
    RowResult {
        name: name.to_string(),
        uncalibrated: pu.to_vec(),
        uncalibrated_percentage: percentages(pu),
        calibrated_percentage: percentages(&summary.mean),
        mean: summary.mean,
        lower_ci: summary.lower,
        upper_ci: summary.upper,
        calibrated: true,
        calibrated_causes,
        diagnostics: Some(diagnostics),
    }
}

/// §7.1 / §7.2: the single-algorithm model of calibrated algorithm `k` over its calibrated set.
fn single_spec(prepared: &Prepared, k: usize, corrected: &Corrected) -> ModelSpec {
    let c = prepared.causes.len();
    let fixed = prepared.mmat_type == MmatType::Fixed;
    let eta = prepared.pshrink_strength;
    let pu = &prepared.p_uncalib[k];
    let s_idx: Vec<usize> = (0..c)
        .filter(|&j| !prepared.donotcalib_tomodel[k][j])
        .collect();
    let tomodel = block(&unwrap_matrix(&corrected.tomodel), &s_idx);
    let counts = subset(&prepared.deaths[k], &s_idx);
    // §7.1: r = p_S/Σp_S has prior Dirichlet((1 + C·η·p0)_S); §7.2: 1 + |S|·η·q.
    let p_prior: Vec<f64> = if fixed {
        let q = normalised(&subset(pu, &s_idx));
        q.iter()
            .map(|x| 1.0 + s_idx.len() as f64 * eta * x)
            .collect()
    } else {
        s_idx
            .iter()
            .map(|&j| 1.0 + c as f64 * eta * pu[j])
            .collect()
    };
    let misclassification = if fixed {
        Misclassification::Fixed(tomodel)
    } else {
        Misclassification::Dirichlet(tomodel)
    };
    ModelSpec {
        p_prior,
        terms: vec![AlgorithmTerm {
            counts,
            calibrated: vec![true; s_idx.len()],
            misclassification,
        }],
    }
}

/// The ensemble's pooled CSMF and the causes it calibrates (those some algorithm calibrates).
fn ensemble_inputs(prepared: &Prepared) -> (Vec<f64>, Vec<bool>, Vec<usize>) {
    let c = prepared.causes.len();
    let pooled: Vec<f64> = (0..c)
        .map(|j| prepared.deaths.iter().map(|r| r[j]).sum())
        .collect();
    let pu = normalised(&pooled);
    let in_s: Vec<bool> = (0..c)
        .map(|j| prepared.donotcalib_tomodel.iter().any(|d| !d[j]))
        .collect();
    let s_idx: Vec<usize> = (0..c).filter(|&j| in_s[j]).collect();
    (pu, in_s, s_idx)
}

/// §7.3: the ensemble model; prior ensembles sample p over all causes, fixed ones over S only.
fn ensemble_spec(
    prepared: &Prepared,
    corrected: &[Corrected],
    pu: &[f64],
    s_idx: &[usize],
) -> ModelSpec {
    let c = prepared.causes.len();
    let eta = prepared.pshrink_strength;
    if prepared.mmat_type == MmatType::Fixed {
        let q = normalised(&subset(pu, s_idx));
        return ModelSpec {
            p_prior: q
                .iter()
                .map(|x| 1.0 + s_idx.len() as f64 * eta * x)
                .collect(),
            terms: corrected
                .iter()
                .zip(&prepared.deaths)
                .map(|(corrected, deaths)| AlgorithmTerm {
                    counts: subset(deaths, s_idx),
                    calibrated: vec![true; s_idx.len()],
                    misclassification: Misclassification::Fixed(block(
                        &unwrap_matrix(&corrected.tomodel),
                        s_idx,
                    )),
                })
                .collect(),
        };
    }
    ModelSpec {
        p_prior: pu.iter().map(|x| 1.0 + c as f64 * eta * x).collect(),
        terms: corrected
            .iter()
            .enumerate()
            .map(|(k, corrected)| {
                let calibrated: Vec<bool> =
                    prepared.donotcalib_tomodel[k].iter().map(|x| !x).collect();
                // Extension: R fails on an uncalibrated member; here its deaths inform p
                // directly (identity misclassification).
                let misclassification = if prepared.calibrated(k) {
                    Misclassification::Dirichlet(unwrap_matrix(&corrected.tomodel))
                } else {
                    Misclassification::Fixed(identity(c))
                };
                AlgorithmTerm {
                    counts: prepared.deaths[k].clone(),
                    calibrated,
                    misclassification,
                }
            })
            .collect(),
    }
}

fn calibrate_prepared(
    prepared: &Prepared,
    mcmc: &McmcRequest,
    path_correction: bool,
    progress: &dyn Progress,
) -> Result<Calibration, EngineError> {
    let c = prepared.causes.len();
    let k_count = prepared.algorithms.len();
    let fixed = prepared.mmat_type == MmatType::Fixed;

    progress.step("Path correction");
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(mcmc.seed, u64::MAX));
    let ensemble = prepared.ensemble.then(|| ensemble_inputs(prepared));
    let shared = SharedProgress {
        inner: progress,
        failed: AtomicBool::new(false),
    };
    let mut corrected: Vec<Corrected> = Vec::with_capacity(k_count);
    let mut single_fit: Vec<Option<usize>> = Vec::with_capacity(k_count);
    let mut ensemble_fit = None;
    // Path correction stays sequential (one random stream, in algorithm order); each
    // algorithm's fit starts as soon as its matrix is ready.
    let fitted = std::thread::scope(|scope| {
        let mut fits = Fits {
            scope,
            mcmc,
            progress: &shared,
            running: Vec::with_capacity(k_count + 1),
        };
        for k in 0..k_count {
            let corrected_k = match path_correct(prepared, k, path_correction, &mut rng) {
                Ok(corrected_k) => corrected_k,
                Err(e) => {
                    fits.abandon();
                    return Err(e);
                }
            };
            single_fit.push(prepared.calibrated(k).then(|| {
                let spec = single_spec(prepared, k, &corrected_k);
                fits.start(&prepared.algorithms[k], spec, k as u64)
            }));
            corrected.push(corrected_k);
        }
        if let Some((pu, _, s_idx)) = &ensemble {
            if s_idx.len() > 1 {
                let spec = ensemble_spec(prepared, &corrected, pu, s_idx);
                ensemble_fit = Some(fits.start("ensemble", spec, k_count as u64));
            }
        }
        fits.finish()
    })?;
    let mut fitted: Vec<Option<(Samples, Diagnostics)>> = fitted.into_iter().map(Some).collect();
    let mut take_fit = |i: usize| fitted[i].take().expect("every fit is used once");

    let mut rows = Vec::with_capacity(k_count + 1);
    let mut deaths_calibrated = Vec::with_capacity(k_count);
    for (k, fit) in single_fit.iter().enumerate() {
        let name = &prepared.algorithms[k];
        let pu = &prepared.p_uncalib[k];
        let in_s: Vec<bool> = prepared.donotcalib_tomodel[k].iter().map(|x| !x).collect();
        let Some(fit) = *fit else {
            rows.push(uncalibrated_row(name, pu, in_s));
            deaths_calibrated.push(prepared.deaths[k].clone());
            continue;
        };
        let s_idx: Vec<usize> = (0..c).filter(|&j| in_s[j]).collect();
        let (samples, mut diagnostics) = take_fit(fit);
        to_causes(&mut diagnostics, &s_idx);
        let summary = summarise(&samples, &s_idx, pu);
        deaths_calibrated.push(calibrated_deaths(
            &prepared.deaths[k],
            &s_idx,
            &summary.mean,
            pu,
        ));
        rows.push(calibrated_row(name, pu, summary, in_s, diagnostics));
    }

    let mut deaths_calibrated_ensemble = None;
    if let Some((pu, in_s, s_idx)) = ensemble {
        match ensemble_fit {
            None => {
                rows.push(uncalibrated_row("ensemble", &pu, in_s));
                deaths_calibrated_ensemble = Some(prepared.deaths.clone());
            }
            Some(fit) => {
                let (samples, mut diagnostics) = take_fit(fit);
                // Prior ensembles sample p over all causes; fixed ones over S_ens only.
                let sampled_idx: Vec<usize> = if fixed {
                    s_idx.clone()
                } else {
                    (0..c).collect()
                };
                to_causes(&mut diagnostics, &sampled_idx);
                let samples = restrict(&samples, &sampled_idx, &s_idx);
                let summary = summarise(&samples, &s_idx, &pu);
                deaths_calibrated_ensemble = Some(
                    prepared
                        .deaths
                        .iter()
                        .map(|observed| calibrated_deaths(observed, &s_idx, &summary.mean, &pu))
                        .collect(),
                );
                rows.push(calibrated_row("ensemble", &pu, summary, in_s, diagnostics));
            }
        }
    }

    Ok(Calibration {
        causes: prepared.causes.clone(),
        algorithms: prepared.algorithms.clone(),
        rows,
        ensemble: prepared.ensemble,
        deaths_uncalibrated: prepared.deaths.clone(),
        deaths_calibrated,
        deaths_calibrated_ensemble,
        lambda: corrected.iter().map(|c| c.lambda).collect(),
        path_correction: corrected
            .iter()
            .map(|c| {
                c.lambda
                    .filter(|_| path_correction)
                    .map(|lambda| PathCorrection {
                        lambda,
                        stalled: lambda >= STALLED_LAMBDA,
                    })
            })
            .collect(),
        rules: prepared.rules,
        mmat_input: prepared.mmat_input.clone(),
        mmat_study: prepared.mmat_study.clone(),
        mmat_tomodel: corrected.into_iter().map(|c| c.tomodel).collect(),
        donotcalib_study: prepared.donotcalib_study.clone(),
        pshrink_strength: prepared.pshrink_strength,
        mmat_type: prepared.mmat_type,
    })
}

/// The ensemble fit of a request exactly as [`calibrate`] sets it up (same preparation, same
/// path-correction stream), for the reference tools that sample it another way.
#[cfg(any(test, feature = "reference-tools"))]
pub(crate) struct EnsembleModel {
    pub(crate) causes: Vec<String>,
    pub(crate) spec: ModelSpec,
    /// The causes the spec's `p` runs over (all of them for prior types, S_ens for fixed).
    pub(crate) sampled_idx: Vec<usize>,
    /// S_ens, the causes the ensemble calibrates.
    pub(crate) s_idx: Vec<usize>,
    /// The pooled uncalibrated CSMF.
    pub(crate) pu: Vec<f64>,
}

#[cfg(any(test, feature = "reference-tools"))]
impl EnsembleModel {
    pub(crate) fn of(request: &CalibrationRequest) -> Result<Self, EngineError> {
        let prepared = prepare(request)?;
        let (pu, _, s_idx) = ensemble_inputs(&prepared);
        if !prepared.ensemble || s_idx.len() < 2 {
            return Err(EngineError::Sampler(
                "the request has no calibrated ensemble".into(),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(request.mcmc.seed, u64::MAX));
        let corrected = (0..prepared.algorithms.len())
            .map(|k| path_correct(&prepared, k, request.path_correction, &mut rng))
            .collect::<Result<Vec<_>, _>>()?;
        let spec = ensemble_spec(&prepared, &corrected, &pu, &s_idx);
        let sampled_idx = if prepared.mmat_type == MmatType::Fixed {
            s_idx.clone()
        } else {
            (0..prepared.causes.len()).collect()
        };
        Ok(Self {
            causes: prepared.causes.clone(),
            spec,
            sampled_idx,
            s_idx,
            pu,
        })
    }

    /// The calibrated ensemble mean that [`calibrate`] reports for these draws of the spec's
    /// `p` (§8.1 through the same `restrict` and `summarise`).
    pub(crate) fn reported_mean(&self, samples: &Samples) -> Vec<f64> {
        let samples = restrict(samples, &self.sampled_idx, &self.s_idx);
        summarise(&samples, &self.s_idx, &self.pu).mean
    }

    /// One draw of the spec's `p` as the reported calibrated CSMF over all causes.
    pub(crate) fn reported_draw(&self, p: &[f64]) -> Vec<f64> {
        let d: f64 = self.s_idx.iter().map(|&j| self.pu[j]).sum();
        let pos: Vec<usize> = self
            .s_idx
            .iter()
            .map(|j| {
                self.sampled_idx
                    .iter()
                    .position(|x| x == j)
                    .expect("sampled")
            })
            .collect();
        let total: f64 = pos.iter().map(|&k| p[k]).sum();
        let mut out = self.pu.clone();
        for (&j, &k) in self.s_idx.iter().zip(&pos) {
            out[j] = d * p[k] / total;
        }
        out
    }
}

/// A fit's multimodal coordinates as the causes they sample (`sampled_idx[coordinate]`).
fn to_causes(diagnostics: &mut Diagnostics, sampled_idx: &[usize]) {
    for j in &mut diagnostics.multimodal_causes {
        *j = sampled_idx[*j];
    }
}

/// Keeps, from draws over the causes `sampled_idx`, the coordinates of `keep_idx` (a subset).
fn restrict(samples: &Samples, sampled_idx: &[usize], keep_idx: &[usize]) -> Samples {
    let pos: Vec<usize> = keep_idx
        .iter()
        .map(|j| {
            sampled_idx
                .iter()
                .position(|x| x == j)
                .expect("kept cause was sampled")
        })
        .collect();
    Samples {
        chains: samples
            .chains
            .iter()
            .map(|chain| crate::mcmc::ChainDraws {
                draws: chain
                    .draws
                    .iter()
                    .map(|d| pos.iter().map(|&p| d[p]).collect())
                    .collect(),
                divergences: chain.divergences,
                max_depth_hits: chain.max_depth_hits,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::AgeGroup;
    use crate::request::VaInput;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// Records the steps and cancels once `cancel_after_polls` cancel checks have been made.
    struct Recorder {
        steps: Mutex<Vec<String>>,
        polls: AtomicUsize,
        cancel_after_polls: usize,
    }

    impl Recorder {
        fn new(cancel_after_polls: usize) -> Self {
            Recorder {
                steps: Mutex::new(vec![]),
                polls: AtomicUsize::new(0),
                cancel_after_polls,
            }
        }
    }

    impl Progress for Recorder {
        fn step(&self, name: &str) {
            self.steps.lock().unwrap().push(name.to_string());
        }
        fn is_cancelled(&self) -> bool {
            self.polls.fetch_add(1, Ordering::Relaxed) >= self.cancel_after_polls
        }
    }

    fn ensemble_request(n_mcmc: u64) -> CalibrationRequest {
        let example = |a: &str| (a.to_string(), VaInput::Example);
        CalibrationRequest {
            va_data: vec![example("eava"), example("insilicova"), example("interva")],
            age_group: Some(AgeGroup::Neonate),
            country: Some("Mozambique".into()),
            mcmc: McmcRequest {
                n_mcmc,
                n_burn: n_mcmc,
                ..McmcRequest::default()
            },
            ..CalibrationRequest::default()
        }
    }

    #[test]
    fn every_fit_reports_its_step_in_algorithm_order() {
        let progress = Recorder::new(usize::MAX);
        let result = calibrate(&ensemble_request(400), &progress).unwrap();
        assert_eq!(
            *progress.steps.lock().unwrap(),
            [
                "Preparing data",
                "Path correction",
                "Sampling eava",
                "Sampling insilicova",
                "Sampling interva",
                "Sampling ensemble"
            ]
        );
        let names: Vec<&str> = result.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["eava", "insilicova", "interva", "ensemble"]);
        assert!(result.rows.iter().all(|r| r.diagnostics.is_some()));
    }

    fn diagnostics(max_rhat: f64, min_ess_bulk: f64, divergences: usize) -> Diagnostics {
        Diagnostics {
            sampler: "nuts",
            max_rhat,
            min_ess_bulk,
            divergences,
            max_depth_hits: 0,
            draws: 5000,
            chains: 4,
            seconds: 0.1,
            multimodal_causes: vec![],
        }
    }

    #[test]
    fn a_converged_fit_has_no_warnings_and_each_problem_has_one() {
        assert!(diagnostics(1.01, 400.0, 0).warnings().is_empty());
        let rhat = diagnostics(1.0101, 2000.0, 0).warnings();
        assert_eq!(rhat.len(), 1);
        assert!(
            rhat[0].starts_with("max R-hat 1.010 is above 1.01"),
            "{rhat:?}"
        );
        // 100 per chain: 4 chains need 400, one chain 100.
        let ess = diagnostics(1.0, 399.0, 0).warnings();
        assert_eq!(ess.len(), 1);
        assert!(
            ess[0].starts_with("min bulk ESS 399 is below 400"),
            "{ess:?}"
        );
        let one_chain = Diagnostics {
            chains: 1,
            ..diagnostics(1.0, 150.0, 0)
        };
        assert!(one_chain.warnings().is_empty());
        let divergent = diagnostics(1.0, 2000.0, 3).warnings();
        assert_eq!(
            divergent,
            [
                "3 divergent transitions after warm-up: the sampler may have missed part of the \
              posterior"
            ]
        );
        assert!(diagnostics(1.0, 2000.0, 1).warnings()[0].starts_with("1 divergent transition "));
        assert_eq!(diagnostics(1.2, 50.0, 7).warnings().len(), 3);
        let undefined = diagnostics(f64::NAN, f64::NAN, 0).warnings();
        assert_eq!(undefined.len(), 1);
        assert!(
            undefined[0].contains("could not be computed"),
            "{undefined:?}"
        );
    }

    #[test]
    fn calibration_warnings_name_their_row() {
        // 400 draws over 4 chains cannot reach an ESS of 400.
        let result = calibrate(&ensemble_request(400), &NoProgress).unwrap();
        let warnings = result.warnings();
        for row in ["eava", "insilicova", "interva", "ensemble"] {
            let prefix = format!("{row}: min bulk ESS ");
            assert!(
                warnings.iter().any(|w| w.starts_with(&prefix)),
                "{row}: {warnings:?}"
            );
        }
    }

    #[test]
    fn cancelling_stops_every_running_fit() {
        // The fits run at once; a cancellation seen by any of them ends the calibration.
        let progress = Recorder::new(20);
        let started = Instant::now();
        let result = calibrate(&ensemble_request(1_000_000), &progress);
        assert_eq!(result.unwrap_err(), EngineError::Cancelled);
        // A full run of 10^6 draws per fit would take minutes.
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    }
}
