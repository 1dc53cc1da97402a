//! Hyperparameter schemas and their validation.
//!
//! Every optimizer declares its options once, with [`options!`]: name, type, default, rule and a
//! line of documentation each. That declaration becomes the options struct, its [`Default`], its
//! table of [`Field`]s and the parsing of packed values ([`Options`]). Bindings read the table to
//! build defaults and to pack options into a flat `[f64]` in table order (flags as 0 or 1, an
//! absent optional number as NaN, a choice as its index); [`validate`] checks such a packed slice
//! and names the first offending field.

use std::fmt;

/// What a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
  Number,
  Flag,
  /// A number or none (PyTorch's `None`), packed as NaN; the rule applies to numbers only.
  OptionalNumber,
  /// One of the names its rule ([`Rule::OneOf`]) lists, or none (PyTorch's `None`): packed as the
  /// name's index, none as NaN.
  OptionalChoice,
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
  /// `x <= 0`, as Adafactor's decay exponent.
  NonPositive,
  /// `x >= 1`, as Adafactor's clipping threshold.
  AtLeastOne,
  /// `0` or `1` (false or true).
  Flag,
  /// A whole number `0 <= x < n`, as Muon's count of Newton–Schulz steps.
  CountBelow(u32),
  /// The index of one of these names (a string option, packed as its index).
  OneOf(&'static [&'static str]),
}

/// One option of an optimizer: `name` is PyTorch's, with tuple elements written `betas[0]`.
#[derive(Clone, Copy, Debug)]
pub struct Field {
  pub name: &'static str,
  pub kind: Kind,
  /// Packed: a flag as 0 or 1, an absent optional number as NaN.
  pub default: f64,
  pub rule: Rule,
  /// One line on what the option does, for generated documentation.
  pub doc: &'static str,
}

impl Field {
  pub const fn number(name: &'static str, default: f64, rule: Rule) -> Self {
    Field { name, kind: Kind::Number, default, rule, doc: "" }
  }

  pub const fn flag(name: &'static str, default: bool) -> Self {
    Field { name, kind: Kind::Flag, default: if default { 1.0 } else { 0.0 }, rule: Rule::Flag, doc: "" }
  }

  /// What a value must be, with the field called `name`: `0 <= betas[0] < 1`.
  pub fn expectation(&self, name: &str) -> String {
    let rule = self.rule.expectation(name);
    if matches!(self.kind, Kind::OptionalNumber | Kind::OptionalChoice) {
      format!("null or {rule}")
    } else {
      rule
    }
  }

  /// Whether a packed value satisfies this field.
  pub fn holds(&self, value: f64) -> bool {
    (self.is_optional() && value.is_nan()) || self.rule.holds(value)
  }

  /// Whether it may be none (PyTorch's `None`), packed as NaN.
  pub fn is_optional(&self) -> bool {
    matches!(self.kind, Kind::OptionalNumber | Kind::OptionalChoice)
  }
}

/// A type an option can have: its packed width, its fields and how it reads back.
pub trait OptionValue: Copy {
  /// How many packed values it takes.
  const WIDTH: usize;
  /// Appends its fields, named `name` (or `name[i]` for a tuple's elements).
  fn fields(name: &'static str, default: Self, rule: Rule, doc: &'static str, out: &mut Vec<Field>);
  /// Reads it from its [`Self::WIDTH`] packed values, already validated.
  fn read(values: &[f64]) -> Self;
}

impl OptionValue for f64 {
  const WIDTH: usize = 1;
  fn fields(name: &'static str, default: Self, rule: Rule, doc: &'static str, out: &mut Vec<Field>) {
    out.push(Field { name, kind: Kind::Number, default, rule, doc });
  }
  fn read(values: &[f64]) -> Self {
    values[0]
  }
}

impl OptionValue for bool {
  const WIDTH: usize = 1;
  fn fields(name: &'static str, default: Self, _: Rule, doc: &'static str, out: &mut Vec<Field>) {
    out.push(Field { doc, ..Field::flag(name, default) });
  }
  fn read(values: &[f64]) -> Self {
    values[0] != 0.0
  }
}

impl OptionValue for Option<f64> {
  const WIDTH: usize = 1;
  fn fields(name: &'static str, default: Self, rule: Rule, doc: &'static str, out: &mut Vec<Field>) {
    out.push(Field { name, kind: Kind::OptionalNumber, default: default.unwrap_or(f64::NAN), rule, doc });
  }
  fn read(values: &[f64]) -> Self {
    Some(values[0]).filter(|x| !x.is_nan())
  }
}

impl OptionValue for usize {
  const WIDTH: usize = 1;
  fn fields(name: &'static str, default: Self, rule: Rule, doc: &'static str, out: &mut Vec<Field>) {
    out.push(Field { name, kind: Kind::Number, default: default as f64, rule, doc });
  }
  fn read(values: &[f64]) -> Self {
    values[0] as usize
  }
}

/// An option that holds one of a few names (PyTorch's string options, such as Muon's
/// `adjust_lr_fn`): an enum whose variants are [`Self::NAMES`] in order. Declared with
/// [`choice!`]; `Option<Self>` is the option's type when PyTorch also takes `None`.
pub trait Choice: Copy + 'static {
  /// PyTorch's spelling of each variant, in order.
  const NAMES: &'static [&'static str];
  fn index(self) -> usize;
  fn from_index(index: usize) -> Self;
}

impl<C: Choice> OptionValue for Option<C> {
  const WIDTH: usize = 1;
  fn fields(name: &'static str, default: Self, _: Rule, doc: &'static str, out: &mut Vec<Field>) {
    let default = default.map_or(f64::NAN, |c| c.index() as f64);
    out.push(Field { name, kind: Kind::OptionalChoice, default, rule: Rule::OneOf(C::NAMES), doc });
  }
  fn read(values: &[f64]) -> Self {
    Some(values[0]).filter(|x| !x.is_nan()).map(|x| C::from_index(x as usize))
  }
}

/// Declares a [`Choice`]: an enum of unit variants, each with PyTorch's name for it.
///
/// ```ignore
/// choice! {
///   /// How Muon scales the learning rate by the matrix's shape.
///   pub enum AdjustLrFn { Original = "original", MatchRmsAdamW = "match_rms_adamw" }
/// }
/// ```
#[macro_export]
macro_rules! choice {
  (
    $(#[$meta:meta])*
    pub enum $name:ident { $( $(#[doc = $doc:literal])* $variant:ident = $text:literal ),* $(,)? }
  ) => {
    $(#[$meta])*
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum $name {
      $( $(#[doc = $doc])* $variant, )*
    }

    impl $crate::config::Choice for $name {
      const NAMES: &'static [&'static str] = &[$($text),*];
      fn index(self) -> usize {
        self as usize
      }
      fn from_index(index: usize) -> Self {
        const VARIANTS: &[$name] = &[$($name::$variant),*];
        VARIANTS[index]
      }
    }
  };
}

impl<A: OptionValue, B: OptionValue, C: OptionValue> OptionValue for (A, B, C) {
  const WIDTH: usize = A::WIDTH + B::WIDTH + C::WIDTH;
  fn fields(name: &'static str, default: Self, rule: Rule, doc: &'static str, out: &mut Vec<Field>) {
    A::fields(element(name, 0), default.0, rule, doc, out);
    B::fields(element(name, 1), default.1, rule, doc, out);
    C::fields(element(name, 2), default.2, rule, doc, out);
  }
  fn read(values: &[f64]) -> Self {
    let (a, rest) = values.split_at(A::WIDTH);
    let (b, c) = rest.split_at(B::WIDTH);
    (A::read(a), B::read(b), C::read(c))
  }
}

/// The name of element `i` of tuple option `name`: `betas[0]`. Made once per optimizer type and
/// kept for the life of the process.
fn element(name: &str, i: usize) -> &'static str {
  Box::leak(format!("{name}[{i}]").into_boxed_str())
}

impl<A: OptionValue, B: OptionValue> OptionValue for (A, B) {
  const WIDTH: usize = A::WIDTH + B::WIDTH;
  fn fields(name: &'static str, default: Self, rule: Rule, doc: &'static str, out: &mut Vec<Field>) {
    A::fields(element(name, 0), default.0, rule, doc, out);
    B::fields(element(name, 1), default.1, rule, doc, out);
  }
  fn read(values: &[f64]) -> Self {
    (A::read(&values[..A::WIDTH]), B::read(&values[A::WIDTH..]))
  }
}

/// An optimizer's options, as [`options!`] declares them.
pub trait Options: Copy + Default + Send + Sync + Sized + 'static {
  /// The options in packed order, with their defaults, rules and documentation.
  fn fields() -> &'static [Field];
  /// Builds a validated configuration from values packed in [`Self::fields`] order.
  fn from_packed(values: &[f64]) -> Result<Self, ConfigError>;
}

/// Declares an optimizer's options once: the struct, its [`Default`], its [`Field`] table and
/// its parsing from packed values, with an optional rule between fields (`check = path;`, a
/// `fn(&Self) -> Result<(), ConfigError>`).
///
/// ```ignore
/// options! {
///   /// Lion's options.
///   pub struct Lion {
///     /// Learning rate γ.
///     lr: f64 = 1e-4, NonNegative;
///     /// Interpolation weights (β₁, β₂).
///     betas: (f64, f64) = (0.9, 0.99), UnitHalfOpen;
///     maximize: bool = false;
///   }
/// }
/// ```
#[macro_export]
macro_rules! options {
  (
    $(#[$meta:meta])*
    pub struct $name:ident {
      $( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr $(, $rule:ident $(($arg:expr))?)? ; )*
    }
    $(check = $check:path ;)?
  ) => {
    $(#[$meta])*
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct $name {
      $( $(#[doc = $doc])* pub $field: $ty, )*
    }

    impl Default for $name {
      fn default() -> Self {
        $name { $( $field: $default, )* }
      }
    }

    impl $crate::config::Options for $name {
      #[allow(unused_mut)]
      fn fields() -> &'static [$crate::config::Field] {
        static FIELDS: ::std::sync::OnceLock<Vec<$crate::config::Field>> = ::std::sync::OnceLock::new();
        FIELDS.get_or_init(|| {
          let mut fields = Vec::new();
          $(
            <$ty as $crate::config::OptionValue>::fields(
              stringify!($field),
              $default,
              $crate::options!(@rule $($rule $(($arg))?)?),
              concat!($($doc),*).trim_ascii(),
              &mut fields,
            );
          )*
          fields
        })
      }

      #[allow(unused_assignments, unused_mut, unused_variables)]
      fn from_packed(values: &[f64]) -> Result<Self, $crate::config::ConfigError> {
        $crate::config::validate(<Self as $crate::config::Options>::fields(), values)?;
        let mut at = 0;
        let options = $name {
          $(
            $field: {
              let width = <$ty as $crate::config::OptionValue>::WIDTH;
              at += width;
              <$ty as $crate::config::OptionValue>::read(&values[at - width..at])
            },
          )*
        };
        $( $check(&options)?; )?
        Ok(options)
      }
    }
  };
  (@rule) => { $crate::config::Rule::Flag };
  (@rule $rule:ident $(($arg:expr))?) => { $crate::config::Rule::$rule $(($arg))? };
}

/// A hyperparameter outside its range, or a rule between fields that does not hold.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigError {
  /// `field` holds `value`, which breaks `rule`.
  OutOfRange { field: &'static str, value: f64, rule: Rule, optional: bool },
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
      ConfigError::OutOfRange { field, value, rule, optional } => {
        let name = rename(field);
        let or_none = if *optional { "null or " } else { "" };
        format!("invalid {name}: {} (expected {or_none}{})", format_number(*value), rule.expectation(&name))
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
      Rule::NonPositive => x.is_finite() && x <= 0.0,
      Rule::AtLeastOne => x.is_finite() && x >= 1.0,
      Rule::Flag => x == 0.0 || x == 1.0,
      Rule::CountBelow(n) => x >= 0.0 && x < f64::from(n) && x.fract() == 0.0,
      Rule::OneOf(names) => x >= 0.0 && x < names.len() as f64 && x.fract() == 0.0,
    }
  }

  fn expectation(self, name: &str) -> String {
    match self {
      Rule::NonNegative => format!("a finite {name} >= 0"),
      Rule::UnitHalfOpen => format!("0 <= {name} < 1"),
      Rule::UnitClosed => format!("0 <= {name} <= 1"),
      Rule::Positive => format!("a finite {name} > 0"),
      Rule::Finite => format!("a finite {name}"),
      Rule::NonPositive => format!("a finite {name} <= 0"),
      Rule::AtLeastOne => format!("a finite {name} >= 1"),
      Rule::Flag => "true or false".to_string(),
      Rule::CountBelow(n) => format!("a whole number 0 <= {name} < {n}"),
      Rule::OneOf(names) => {
        let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        format!("one of {}", quoted.join(", "))
      }
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
    if !field.holds(value) {
      return Err(ConfigError::OutOfRange {
        field: field.name,
        value,
        rule: field.rule,
        optional: field.is_optional(),
      });
    }
  }
  Ok(())
}

/// The defaults of a field table, packed.
pub fn defaults(fields: &[Field]) -> Vec<f64> {
  fields.iter().map(|f| f.default).collect()
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
