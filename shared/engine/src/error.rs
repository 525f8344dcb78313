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

/// The message of a caught panic (`panic!` payloads are `&str` or `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

impl From<crate::mcmc::SamplerError> for EngineError {
    fn from(e: crate::mcmc::SamplerError) -> Self {
        match e {
            crate::mcmc::SamplerError::Cancelled => EngineError::Cancelled,
            crate::mcmc::SamplerError::Failed(m) => EngineError::Sampler(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_of_every_payload() {
        let literal = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*literal), "plain");
        let n = 3;
        let formatted = std::panic::catch_unwind(|| panic!("chain {n}")).unwrap_err();
        assert_eq!(panic_message(&*formatted), "chain 3");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(panic_message(&*other), "unknown panic");
    }
}
