// The posterior of calibration-model.md §7.1 as Stan samples it in vacalibration 2.2: p and
// every row of every algorithm's matrix are simplexes over all C causes (Stan's stick-breaking
// transform); rows and columns outside an algorithm's calibrated set S_k are identity.
data {
  int<lower=1> K;
  int<lower=2> C;
  array[K, C] int<lower=0> counts;
  array[K, C] int<lower=0, upper=1> calibrated;
  array[K, C] vector<lower=0>[C] alpha;
  vector<lower=0>[C] p_prior;
}
parameters {
  simplex[C] p;
  array[K, C] simplex[C] theta;
}
model {
  p ~ dirichlet(p_prior);
  for (k in 1:K) {
    matrix[C, C] M = rep_matrix(0, C, C);
    for (i in 1:C) {
      theta[k, i] ~ dirichlet(alpha[k, i]);
      if (calibrated[k, i] == 1) {
        real s = 0;
        for (j in 1:C) if (calibrated[k, j] == 1) s += theta[k, i, j];
        for (j in 1:C) if (calibrated[k, j] == 1) M[i, j] = theta[k, i, j] / s;
      } else {
        M[i, i] = 1;
      }
    }
    counts[k] ~ multinomial(M' * p);
  }
}
