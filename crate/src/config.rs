//! Hyperparameter schemas and their validation.
//!
//! Every optimizer describes its options once, as a table of [`Field`]s: name, kind, default
//! and the rule a value must satisfy. Bindings read that table to build defaults and to pack
//! options into a flat `[f64]` (flags as 0 or 1) in table order; [`validate`] checks such a
//! packed slice and names the first offending field.

use std::fmt;

/// What a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
  Number,
  Flag,
}

/// The range a field's value must lie in. Every number must also be finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
  /// `x >= 0`
  NonNegative,
  /// `0 <= x < 1`, as for Adam's betas.
  UnitHalfOpen,
  /// `0 <= x <= 1`
  UnitClosed,
  /// `x > 0`
  Positive,
  /// Any finite number.
  Finite,
  /// `0` or `1` (false or true).
  Flag,
}

/// One option of an optimizer: `name` is PyTorch's, with tuple elements written `betas[0]`.
#[derive(Clone, Copy, Debug)]
pub struct Field {
  pub name: &'static str,
  pub kind: Kind,
  pub default: f64,
  pub rule: Rule,
}

impl Field {
  pub const fn number(name: &'static str, default: f64, rule: Rule) -> Self {
    Field { name, kind: Kind::Number, default, rule }
  }

  pub const fn flag(name: &'static str, default: bool) -> Self {
    Field { name, kind: Kind::Flag, default: if default { 1.0 } else { 0.0 }, rule: Rule::Flag }
  }
}

/// A hyperparameter outside its range, or a rule between fields that does not hold.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigError {
  /// `field` holds `value`, which breaks `rule`.
  OutOfRange { field: &'static str, value: f64, rule: Rule },
  /// A rule that involves several fields. `message` names each of `fields` in backquotes, so
  /// that [`ConfigError::describe`] can respell them, and gives their values.
  Conflict { fields: &'static [&'static str], message: String },
  /// The packed slice does not have one value per field.
  Arity { expected: usize, got: usize },
}

impl ConfigError {
  /// The message with each field named by `rename` (a binding's own spelling, e.g. camelCase).
  pub fn describe(&self, rename: impl Fn(&str) -> String) -> String {
    match self {
      ConfigError::OutOfRange { field, value, rule } => {
        let name = rename(field);
        format!("invalid {name}: {} (expected {})", format_number(*value), rule.expectation(&name))
      }
      ConfigError::Conflict { fields, message } => {
        fields.iter().fold(message.to_string(), |text, field| text.replace(&format!("`{field}`"), &rename(field)))
      }
      ConfigError::Arity { expected, got } => {
        format!("expected {expected} packed hyperparameters, got {got}")
      }
    }
  }

  /// The field the error is about, if it is about one.
  pub fn field(&self) -> Option<&'static str> {
    match self {
      ConfigError::OutOfRange { field, .. } => Some(field),
      ConfigError::Conflict { fields, .. } => fields.first().copied(),
      ConfigError::Arity { .. } => None,
    }
  }
}

impl fmt::Display for ConfigError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&self.describe(|name| name.to_string()))
  }
}

impl std::error::Error for ConfigError {}

impl Rule {
  pub fn holds(self, x: f64) -> bool {
    match self {
      Rule::NonNegative => x.is_finite() && x >= 0.0,
      Rule::UnitHalfOpen => (0.0..1.0).contains(&x),
      Rule::UnitClosed => (0.0..=1.0).contains(&x),
      Rule::Positive => x.is_finite() && x > 0.0,
      Rule::Finite => x.is_finite(),
      Rule::Flag => x == 0.0 || x == 1.0,
    }
  }

  fn expectation(self, name: &str) -> String {
    match self {
      Rule::NonNegative => format!("a finite {name} >= 0"),
      Rule::UnitHalfOpen => format!("0 <= {name} < 1"),
      Rule::UnitClosed => format!("0 <= {name} <= 1"),
      Rule::Positive => format!("a finite {name} > 0"),
      Rule::Finite => format!("a finite {name}"),
      Rule::Flag => "true or false".to_string(),
    }
  }
}

/// A number as JavaScript prints it: `1e-8`, `0.5`, `3`, `NaN`, `Infinity`.
pub fn format_number(x: f64) -> String {
  if x.is_nan() {
    "NaN".into()
  } else if x.is_infinite() {
    if x > 0.0 {
      "Infinity".into()
    } else {
      "-Infinity".into()
    }
  } else {
    let text = format!("{x:?}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
  }
}

/// Checks one packed value per field, in table order.
pub fn validate(fields: &[Field], packed: &[f64]) -> Result<(), ConfigError> {
  if fields.len() != packed.len() {
    return Err(ConfigError::Arity { expected: fields.len(), got: packed.len() });
  }
  for (field, &value) in fields.iter().zip(packed) {
    if !field.rule.holds(value) {
      return Err(ConfigError::OutOfRange { field: field.name, value, rule: field.rule });
    }
  }
  Ok(())
}

/// The defaults of a field table, packed.
pub fn defaults(fields: &[Field]) -> Vec<f64> {
  fields.iter().map(|f| f.default).collect()
}

/// Reads packed values by field name; used by `from_packed` implementations after [`validate`].
pub(crate) struct Packed<'a> {
  fields: &'static [Field],
  values: &'a [f64],
}

impl<'a> Packed<'a> {
  pub(crate) fn new(fields: &'static [Field], values: &'a [f64]) -> Result<Self, ConfigError> {
    validate(fields, values)?;
    Ok(Packed { fields, values })
  }

  pub(crate) fn number(&self, name: &str) -> f64 {
    let index = self.fields.iter().position(|f| f.name == name);
    self.values[index.unwrap_or_else(|| panic!("no field {name}"))]
  }

  pub(crate) fn flag(&self, name: &str) -> bool {
    self.number(name) != 0.0
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn numbers_print_as_javascript_does() {
    assert_eq!(format_number(1e-8), "1e-8");
    assert_eq!(format_number(1.2), "1.2");
    assert_eq!(format_number(3.0), "3");
    assert_eq!(format_number(-0.5), "-0.5");
    assert_eq!(format_number(f64::NAN), "NaN");
    assert_eq!(format_number(f64::NEG_INFINITY), "-Infinity");
  }

  #[test]
  fn messages_name_field_value_and_expectation() {
    let fields = [Field::number("betas[0]", 0.9, Rule::UnitHalfOpen)];
    let err = validate(&fields, &[1.2]).unwrap_err();
    assert_eq!(err.to_string(), "invalid betas[0]: 1.2 (expected 0 <= betas[0] < 1)");
    let fields = [Field::number("weight_decay", 0.0, Rule::NonNegative)];
    let err = validate(&fields, &[f64::INFINITY]).unwrap_err();
    assert_eq!(
      err.describe(|n| if n == "weight_decay" { "weightDecay".into() } else { n.into() }),
      "invalid weightDecay: Infinity (expected a finite weightDecay >= 0)"
    );
  }

  #[test]
  fn flags_are_zero_or_one() {
    let fields = [Field::flag("amsgrad", false)];
    assert!(validate(&fields, &[1.0]).is_ok());
    assert!(validate(&fields, &[0.5]).is_err());
    assert_eq!(validate(&fields, &[]), Err(ConfigError::Arity { expected: 1, got: 0 }));
  }
}
