//! Template filling: the minijinja environment over the templates in `templates/` (embedded
//! in the binary), the filters that write figures in each language, and the escaping that
//! keeps data from ever becoming Typst code.
//!
//! In templates named `*.typ.j2` every printed value is escaped as Typst markup text; a value
//! needed inside Typst code goes through the `typst_code` filter, which writes a string or
//! number literal. Printing a missing figure (`none`) is an error, so templates must test for
//! a figure before they state it.

use chrono::NaiveDate;
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior, context};

use crate::narrative::{self, Language};
use crate::period::Period;
use crate::summary::Summary;

/// The templates, embedded so that the binary runs from anywhere.
const TEMPLATES: &[(&str, &str)] = &[
    ("bulletin.typ.j2", include_str!("../templates/bulletin.typ.j2")),
    ("narrative.en.typ.j2", include_str!("../templates/narrative.en.typ.j2")),
    ("narrative.zh.typ.j2", include_str!("../templates/narrative.zh.typ.j2")),
    ("labels.j2", include_str!("../templates/labels.j2")),
    ("summary.txt.j2", include_str!("../templates/summary.txt.j2")),
];

/// The Typst library the bulletin imports: static Typst, copied into each job's root as is.
pub const TYPST_LIBRARY: (&str, &str) = ("bulletin-lib.typ", include_str!("../templates/bulletin-lib.typ"));

/// The name of the template that makes the bulletin's Typst source.
pub const BULLETIN_TEMPLATE: &str = "bulletin.typ.j2";
const SUMMARY_TEMPLATE: &str = "summary.txt.j2";
const TYPST_ESCAPE: &str = "typst";

/// A template that failed, with where.
#[derive(Debug, thiserror::Error)]
#[error("template {template} line {line}: {message}")]
pub struct TemplateError {
    pub template: String,
    pub line: usize,
    pub message: String,
}

impl From<Error> for TemplateError {
    fn from(error: Error) -> TemplateError {
        // An error in an included template is the source of the include's error: report the
        // innermost one, where the fault is.
        let mut error = &error;
        while let Some(inner) = std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>()) {
            error = inner;
        }
        TemplateError {
            template: error.name().unwrap_or("?").to_string(),
            line: error.line().unwrap_or(0),
            message: match error.detail() {
                Some(detail) => format!("{}: {detail}", error.kind()),
                None => error.kind().to_string(),
            },
        }
    }
}

/// What a bulletin shows beside the summary.
#[derive(Debug, Clone)]
pub struct BulletinMeta {
    pub language: Language,
    /// The date of issue printed on the bulletin.
    pub issued: NaiveDate,
    /// Who publishes the bulletin (the title block's source line).
    pub publisher: String,
}

/// The templates, ready to fill. Build once and share: filling does not mutate it.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    /// Loads the embedded templates; they are checked by the tests, so this cannot fail at
    /// run time.
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build();
        env.set_syntax(syntax.expect("the default delimiters are valid"));
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".typ.j2") {
                AutoEscape::Custom(TYPST_ESCAPE.into())
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(format_value);
        env.add_filter("money", money);
        env.add_filter("rate", rate);
        env.add_filter("growth", growth);
        env.add_filter("gap", gap);
        env.add_filter("period_name", period_name);
        env.add_filter("period_label", period_label);
        env.add_filter("typst_code", typst_code);
        env.add_filter("billions", billions);
        env.add_filter("unit", unit);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("embedded templates parse");
        }
        Templates { env }
    }

    /// Fills the bulletin template: the Typst source of the bulletin.
    pub fn bulletin(&self, summary: &Summary, meta: &BulletinMeta) -> Result<String, TemplateError> {
        self.fill(BULLETIN_TEMPLATE, summary, meta)
    }

    /// Fills the plain-text summary, as `tradebulletin summary --format text` prints it.
    pub fn summary_text(&self, summary: &Summary, language: Language) -> Result<String, TemplateError> {
        let meta = BulletinMeta {
            language,
            issued: NaiveDate::default(),
            publisher: String::new(),
        };
        self.fill(SUMMARY_TEMPLATE, summary, &meta)
    }

    fn fill(&self, name: &str, summary: &Summary, meta: &BulletinMeta) -> Result<String, TemplateError> {
        let template = self.env.get_template(name)?;
        let rendered = template.render(context! {
            s => Value::from(Serde(summary)),
            lang => meta.language.code(),
            currency => summary.currency.code(),
            issued => meta.issued.format("%Y-%m-%d").to_string(),
            issued_zh => meta.issued.format("%Y年%-m月%-d日").to_string(),
            publisher => &meta.publisher,
        })?;
        Ok(rendered)
    }
}

/// Writes a value into a template: Typst-markup-escaped in `*.typ.j2` templates.
fn format_value(out: &mut minijinja::Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_undefined() {
        // `{{ "x" if cond }}` with a false condition; unknown names already fail (strict).
        return Ok(());
    }
    if value.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a missing value was printed; test for it with {% if %} first",
        ));
    }
    if matches!(state.auto_escape(), AutoEscape::Custom(name) if name == TYPST_ESCAPE) && !value.is_safe() {
        let text = value.to_string();
        return out.write_str(&escape_markup(&text)).map_err(Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

/// Escapes text for Typst markup: every ASCII punctuation character gets a backslash (Typst
/// reads `\` + any non-space character as that character), and control characters and line
/// breaks become spaces. The result always displays as the given text, never as markup or
/// code.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for c in text.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
            out.push(c);
        } else if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes a Typst string literal that holds `text` exactly.
pub fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn language(state: &State) -> Language {
    state
        .lookup("lang")
        .and_then(|v| v.as_str().and_then(Language::parse))
        .unwrap_or_default()
}

fn number(value: &Value, what: &str) -> Result<f64, Error> {
    f64::try_from(value.clone()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("{what} needs a number, got {}", value.kind()),
        )
    })
}

/// `{{ x|money }}` or `{{ x|money("USD") }}`: an amount with its scale and currency words.
fn money(state: &State, value: Value, currency: Option<String>) -> Result<String, Error> {
    let currency = currency
        .or_else(|| state.lookup("currency").and_then(|c| c.as_str().map(str::to_string)))
        .unwrap_or_else(|| "CNY".to_string());
    Ok(narrative::money(number(&value, "money")?, &currency, language(state)))
}

/// `{{ x|billions }}`: the value in billions (or 亿 in Chinese) as a plain number for tables.
fn billions(state: &State, value: Value) -> Result<String, Error> {
    let x = number(&value, "billions")?;
    let text = match language(state) {
        Language::En => format!("{:.2}", x.abs() / 1e9),
        Language::Zh => format!("{:.1}", x.abs() / 1e8),
    };
    Ok(if x < 0.0 { format!("-{text}") } else { text })
}

/// `{{ currency|unit }}`: the unit of table columns, `billion yuan` or `亿元`.
fn unit(state: &State, currency: String) -> String {
    narrative::table_unit(&currency, language(state))
}

/// `{{ g|rate }}`: a rate to one decimal with its sign when negative.
fn rate(value: Value) -> Result<String, Error> {
    let x = number(&value, "rate")?;
    Ok(if x < 0.0 {
        format!("-{}", narrative::rate(x))
    } else {
        narrative::rate(x)
    })
}

/// `{{ amount|growth }}`: the growth phrase of an amount (needs `growth_pct`).
fn growth(state: &State, amount: Value) -> Result<String, Error> {
    let pct = amount.get_attr("growth_pct")?;
    let times = amount.get_attr("growth_times")?;
    let times = if times.is_none() || times.is_undefined() {
        None
    } else {
        Some(number(&times, "growth")?)
    };
    Ok(narrative::growth(number(&pct, "growth")?, times, language(state)))
}

/// `{{ figure.gap_pp|gap }}`: the gap to the national rate as a phrase.
fn gap(state: &State, value: Value) -> Result<String, Error> {
    Ok(narrative::gap(number(&value, "gap")?, language(state)))
}

fn parse_period(value: &Value) -> Result<Period, Error> {
    let text = value.as_str().unwrap_or_default();
    Period::parse(text).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// `{{ s.period|period_name }}`: `the first half of 2019`, `2019年上半年`.
fn period_name(state: &State, value: Value) -> Result<String, Error> {
    Ok(narrative::period_name(&parse_period(&value)?, language(state)))
}

/// `{{ s.period|period_label }}`: a short label for tables.
fn period_label(state: &State, value: Value) -> Result<String, Error> {
    Ok(narrative::period_label(&parse_period(&value)?, language(state)))
}

/// `{{ x|typst_code }}`: a Typst literal of the value, for use inside Typst code.
fn typst_code(value: Value) -> Result<Value, Error> {
    let literal = if value.is_none() || value.is_undefined() {
        "none".to_string()
    } else if value.is_number() {
        let x = number(&value, "typst_code")?;
        if x.is_finite() {
            format!("{x:?}")
        } else {
            "none".to_string()
        }
    } else if let Some(flag) = value.as_bool_exact() {
        flag.to_string()
    } else {
        string_literal(&value.to_string())
    };
    Ok(Value::from_safe_string(literal))
}

trait ExactBool {
    fn as_bool_exact(&self) -> Option<bool>;
}

impl ExactBool for Value {
    fn as_bool_exact(&self) -> Option<bool> {
        (self.kind() == minijinja::value::ValueKind::Bool).then(|| self.is_true())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_escaping_leaves_no_markup() {
        assert_eq!(
            escape_markup("#read(\"/etc/passwd\")"),
            "\\#read\\(\\\"\\/etc\\/passwd\\\"\\)"
        );
        assert_eq!(escape_markup("a\nb"), "a b");
        assert_eq!(escape_markup("黑龙江 Russia"), "黑龙江 Russia");
        for text in [
            "] #panic(\"x\") [",
            "$x$",
            "\\",
            "@ref",
            "<label>",
            "// c",
            "= h",
            "- l",
            "*b*",
            "_e_",
            "`r`",
        ] {
            let escaped = escape_markup(text);
            let chars: Vec<char> = escaped.chars().collect();
            for (i, c) in chars.iter().enumerate() {
                if c.is_ascii_punctuation() && *c != '\\' {
                    assert_eq!(chars[i - 1], '\\', "{text}: {escaped}");
                }
            }
        }
    }

    #[test]
    fn string_literals_hold_any_text() {
        assert_eq!(string_literal("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(string_literal("\u{1}"), "\"\\u{1}\"");
    }
}
