//! Every way a calibration can be refused, as a value with a message that names the problem.

/// A calibration error. `field` is a dotted path into the request where one applies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The request is invalid; the message says why and `field` says where.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The caller cancelled the run.
    #[error("calibration cancelled")]
    Cancelled,
    /// The sampler could not produce draws (numerical trouble); not the caller's fault.
    #[error("sampler failed: {0}")]
    Sampler(String),
}

impl EngineError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// True when the error is the caller's input (a 4xx in the API), false for internal ones.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, EngineError::Invalid { .. })
    }
}

impl From<crate::mcmc::SamplerError> for EngineError {
    fn from(e: crate::mcmc::SamplerError) -> Self {
        match e {
            crate::mcmc::SamplerError::Cancelled => EngineError::Cancelled,
            crate::mcmc::SamplerError::Failed(m) => EngineError::Sampler(m),
        }
    }
}
