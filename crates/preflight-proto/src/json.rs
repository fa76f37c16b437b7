//! How proto enums look in `--output json` and to people: the variant's snake_case name
//! (`Verdict::Hard` → `"hard"`, `PortStatus::InUse` → `"in_use"`), the unset zero value as
//! `""`, and a value this build does not know as its number. `build.rs` attaches
//! [`enum_name`] / [`enum_names`] to every enum field, so the JSON of a message keeps the words
//! the string fields had before they became enums.

use std::fmt::Debug;

/// The name of enum value `v` of `E`: snake_case, `""` for the zero value `Unspecified`,
/// the number when `E` has no such value.
pub fn name<E: TryFrom<i32> + Debug>(v: i32) -> String {
    match E::try_from(v) {
        Ok(e) => {
            let camel = format!("{e:?}");
            if camel == "Unspecified" {
                return String::new();
            }
            let mut out = String::with_capacity(camel.len() + 4);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() {
                    if i > 0 {
                        out.push('_');
                    }
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Err(_) => v.to_string(),
    }
}

/// serde `serialize_with` for an enum field.
pub fn enum_name<E, S>(v: &i32, s: S) -> Result<S::Ok, S::Error>
where
    E: TryFrom<i32> + Debug,
    S: serde::Serializer,
{
    s.serialize_str(&name::<E>(*v))
}

/// serde `serialize_with` for a repeated enum field.
pub fn enum_names<E, S>(v: &[i32], s: S) -> Result<S::Ok, S::Error>
where
    E: TryFrom<i32> + Debug,
    S: serde::Serializer,
{
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&name::<E>(*x))?;
    }
    seq.end()
}

/// serde `serialize_with` for an optional enum field.
pub fn enum_name_opt<E, S>(v: &Option<i32>, s: S) -> Result<S::Ok, S::Error>
where
    E: TryFrom<i32> + Debug,
    S: serde::Serializer,
{
    match v {
        Some(x) => s.serialize_some(&name::<E>(*x)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{HardenOperation, HardenRequest};

    #[test]
    fn names_are_snake_case_and_the_zero_value_is_empty() {
        assert_eq!(
            name::<HardenOperation>(HardenOperation::Rollback as i32),
            "rollback"
        );
        assert_eq!(name::<HardenOperation>(0), "");
        assert_eq!(name::<HardenOperation>(77), "77");
    }

    #[test]
    fn an_enum_field_serialises_as_its_name() {
        let req = HardenRequest {
            operation: HardenOperation::Verify as i32,
            ..Default::default()
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["operation"], "verify");
    }
}
