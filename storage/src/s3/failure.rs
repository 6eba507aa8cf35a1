//! What a failed SDK request means: its kind, its words, and a count of it.

use super::*;

impl S3Store {
    /// Turns an SDK error into a [`StorageError`], classified, and counts it.
    pub(super) fn error<E>(
        &self,
        operation: &'static str,
        target: String,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_string);
        let (status, kind, message) = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let (kind, message) = service_failure(status, code.as_deref(), &err);
                (Some(status), kind, message)
            }
            SdkError::ConstructionFailure(_) => (
                None,
                credentials_fault(&err).unwrap_or(ErrorKind::Permanent),
                error_chain(&err),
            ),
            _ if matches!(&err, SdkError::TimeoutError(_))
                || matches!(&err, SdkError::DispatchFailure(d) if d.is_timeout()) =>
            {
                let words = format!(
                    "no answer within {:?} ({})",
                    self.timeouts.first_byte, self.address
                );
                (None, ErrorKind::Retryable, words)
            }
            _ => {
                let (kind, message) = self.transport_failure(&err);
                (None, kind, message)
            }
        };
        if !crate::capabilities::probing() {
            let status = status.map_or_else(|| "none".to_string(), |s| s.to_string());
            Metric::S3Errors
                .counter(&[("operation", operation.into()), ("status", status)])
                .increment(1);
        }
        StorageError {
            kind,
            operation,
            target,
            status,
            code,
            message,
        }
    }

    /// A request that got no answer: an untrusted certificate, missing credentials, or the
    /// network, each in its own words.
    fn transport_failure(&self, err: &(dyn std::error::Error + 'static)) -> (ErrorKind, String) {
        if let Some(message) = untrusted_certificate(err) {
            return (ErrorKind::Permanent, message);
        }
        match credentials_fault(err) {
            Some(kind) => (kind, credentials_words(err)),
            None => (classify(None, None), transport_words(err, &self.address)),
        }
    }
}

/// How to treat a failure that comes from the credentials provider: a provider that timed out
/// or failed (IMDS, STS, a credential process) may well answer next time; a provider that is
/// misconfigured will not.
fn credentials_fault(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(match c {
                CredentialsError::InvalidConfiguration(_) => ErrorKind::Permanent,
                _ => ErrorKind::Retryable,
            });
        }
        cause = e.source();
    }
    None
}

/// A request that could not be signed, in words: which credentials were missing, and where
/// to give them.
fn credentials_words(err: &(dyn std::error::Error + 'static)) -> String {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            let why = match c {
                CredentialsError::CredentialsNotLoaded(_) => "none were found".to_string(),
                other => error_chain(other),
            };
            return format!(
                "no credentials to sign with ({why}): give the endpoint access_key_id and \
                 secret_access_key (or access_key_id_env and secret_access_key_env), or set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            );
        }
        cause = e.source();
    }
    error_chain(err)
}

/// An answer with an HTTP status, in words: the service's code and message when it gave them.
fn service_failure<E>(status: u16, code: Option<&str>, err: &E) -> (ErrorKind, String)
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let message = match (code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ if status < 300 => {
            let mut detail = format!("{}", DisplayErrorContext(err));
            detail.truncate(detail.floor_char_boundary(300));
            format!("unreadable response: {detail}")
        }
        _ => status_text(status),
    };
    // A 2xx whose body does not parse (a truncated or garbled listing page) is a transport
    // fault: the next try usually reads it whole.
    let kind = if status < 300 {
        ErrorKind::Retryable
    } else {
        classify(Some(status), code)
    };
    (kind, message)
}
