//! The group id a consumer group member is created with: one check for [`Consumer`] and
//! [`ExactlyOnce`], so both refuse the same ids with the same error.
//!
//! [`Consumer`]: crate::Consumer
//! [`ExactlyOnce`]: crate::ExactlyOnce

use crate::error::{Error, Result};

/// Refuses an empty group id, naming the variable that sets it; `member` says what needs it
/// ("a consumer", "an exactly-once pipeline").
pub(crate) fn check(group: &str, member: &str) -> Result<()> {
    if group.is_empty() {
        return Err(Error::config(
            "KAFKA_GROUP_ID",
            format!("{member} needs a group id"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_group_id_names_its_variable() {
        let error = check("", "a consumer").unwrap_err();
        assert!(
            matches!(&error, Error::Config { variable, .. } if variable == "KAFKA_GROUP_ID"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("a consumer needs a group id"),
            "{error}"
        );
        check("billing", "a consumer").unwrap();
    }
}
