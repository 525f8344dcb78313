//! Warm-up adaptation as in Stan: dual averaging of the step size and windowed estimation of
//! the diagonal metric.

/// Stan's dual averaging of the log step size towards a target mean acceptance statistic.
#[derive(Debug, Clone)]
pub(super) struct StepSizeAdaptation {
    target: f64,
    mu: f64,
    counter: f64,
    s_bar: f64,
    x_bar: f64,
}

impl StepSizeAdaptation {
    const GAMMA: f64 = 0.05;
    const T0: f64 = 10.0;
    const KAPPA: f64 = 0.75;

    pub(super) fn new(target: f64) -> Self {
        StepSizeAdaptation {
            target,
            mu: 0.0,
            counter: 0.0,
            s_bar: 0.0,
            x_bar: 0.0,
        }
    }

    /// Restarts the averaging around `10 × step_size`.
    pub(super) fn restart(&mut self, step_size: f64) {
        self.mu = (10.0 * step_size).ln();
        self.counter = 0.0;
        self.s_bar = 0.0;
        self.x_bar = 0.0;
    }

    /// Feeds one acceptance statistic and returns the next step size.
    pub(super) fn learn(&mut self, accept_stat: f64) -> f64 {
        self.counter += 1.0;
        let accept = accept_stat.min(1.0);
        let eta = 1.0 / (self.counter + Self::T0);
        self.s_bar = (1.0 - eta) * self.s_bar + eta * (self.target - accept);
        let x = self.mu - self.s_bar * self.counter.sqrt() / Self::GAMMA;
        let x_eta = self.counter.powf(-Self::KAPPA);
        self.x_bar = (1.0 - x_eta) * self.x_bar + x_eta * x;
        x.exp()
    }

    /// The step size used after warm-up: the averaged iterate.
    pub(super) fn final_step_size(&self) -> f64 {
        self.x_bar.exp()
    }
}

/// Stan's windowed estimation of the diagonal metric: an initial buffer of fast (step-size
/// only) adaptation, doubling windows in which the variances of the positions are estimated,
/// and a final fast buffer.
#[derive(Debug, Clone)]
pub(super) struct MetricAdaptation {
    num_warmup: usize,
    init_buffer: usize,
    term_buffer: usize,
    window_size: usize,
    next_window: usize,
    counter: usize,
    /// Welford accumulators.
    n: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    enabled: bool,
}

impl MetricAdaptation {
    pub(super) fn new(num_warmup: usize, dim: usize) -> Self {
        let (mut init_buffer, mut term_buffer, mut base_window) = (75, 50, 25);
        let enabled = num_warmup >= 20;
        if enabled && init_buffer + base_window + term_buffer > num_warmup {
            init_buffer = num_warmup * 15 / 100;
            term_buffer = num_warmup / 10;
            base_window = num_warmup - (init_buffer + term_buffer);
        }
        MetricAdaptation {
            num_warmup,
            init_buffer,
            term_buffer,
            window_size: base_window,
            next_window: (init_buffer + base_window).saturating_sub(1),
            counter: 0,
            n: 0.0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
            enabled,
        }
    }

    fn in_window(&self) -> bool {
        self.counter >= self.init_buffer
            && self.counter < self.num_warmup - self.term_buffer
            && self.counter != self.num_warmup
    }

    fn window_ends(&self) -> bool {
        self.counter == self.next_window && self.counter != self.num_warmup
    }

    fn compute_next_window(&mut self) {
        let last = self.num_warmup - self.term_buffer - 1;
        if self.next_window == last {
            return;
        }
        self.window_size *= 2;
        self.next_window = self.counter + self.window_size;
        if self.next_window != last && self.next_window + 2 * self.window_size > last {
            self.next_window = last;
        }
    }

    /// Feeds the position of one warm-up iteration; at the end of a window writes the
    /// regularised variances to `inv_metric` and returns true.
    pub(super) fn learn(&mut self, q: &[f64], inv_metric: &mut [f64]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.in_window() {
            self.n += 1.0;
            for ((x, mean), m2) in q.iter().zip(&mut self.mean).zip(&mut self.m2) {
                let delta = x - *mean;
                *mean += delta / self.n;
                *m2 += delta * (x - *mean);
            }
        }
        if self.window_ends() {
            self.compute_next_window();
            let n = self.n;
            // Shrink towards 1e-3 as Stan does, so that a short window cannot collapse a
            // coordinate.
            for (v, m2) in inv_metric.iter_mut().zip(&self.m2) {
                let var = if n > 1.0 { m2 / (n - 1.0) } else { 1.0 };
                *v = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0));
            }
            self.n = 0.0;
            self.mean.fill(0.0);
            self.m2.fill(0.0);
            self.counter += 1;
            return true;
        }
        self.counter += 1;
        false
    }
}

pub(super) struct Adaptation {
    pub(super) step_size: StepSizeAdaptation,
    pub(super) metric: MetricAdaptation,
}

impl Adaptation {
    pub(super) fn new(num_warmup: usize, dim: usize, target_accept: f64) -> Self {
        Adaptation {
            step_size: StepSizeAdaptation::new(target_accept),
            metric: MetricAdaptation::new(num_warmup, dim),
        }
    }
}
