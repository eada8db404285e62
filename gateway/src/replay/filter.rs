//! The replay filter: a small expression an operator types to pick which events to replay,
//! e.g. `outcome = unknown AND error_code IN ('E_DB', "E_TIMEOUT") AND attempts < 3`.
//!
//! Deliberately small: fixed fields, conditions joined only by `AND`, no `OR`, `NOT` or
//! grouping. A replay re-sends real traffic, so the selection must be something a tired
//! on-call engineer can read back from the audit log and be sure of; anything richer is
//! better done as two replays.
//!
//! Three promises the rest of the gateway relies on:
//! - a bad expression fails with the column and the reason ([`FilterError`]), never with a
//!   guess at what was meant;
//! - no value ever reaches SQL text: [`Filter::to_sql`] hands back placeholders and the
//!   parameters to bind;
//! - [`Filter`]'s `Display` is a normalised form that parses back to the same filter, so the
//!   audit log records exactly what was replayed.

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest expression accepted, in characters: a filter is typed by hand, and a bound keeps
/// error columns and audit lines readable.
pub const MAX_CHARS: usize = 2_000;
/// Most conditions joined with `AND`: more is a sign the selection belongs in two replays.
pub const MAX_CLAUSES: usize = 20;
/// Most values in one `IN (…)` list, which also bounds the bind parameters of one clause.
pub const MAX_IN_VALUES: usize = 100;

/// The event fields a filter may test. Fixed on purpose: each maps to an indexed or cheap
/// column of `events`, and nothing else (headers, body) is exposed to ad-hoc matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Source,
    EventType,
    Outcome,
    ErrorCode,
    Attempts,
    ReceivedAt,
    /// The provider's own event id (Stripe's `evt_…`, `X-GitHub-Delivery`, `webhook-id`):
    /// the event's dedup key.
    ProviderId,
}

/// How a field's values are written and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Outcome,
    Count,
    Time,
}

const FIELD_LIST: &str = "source, event_type, outcome, error_code, attempts, received_at, provider_id";
const OPERATOR_LIST: &str = "= != > < >= <= IN";
const OUTCOMES: [&str; 4] = ["confirmed", "failed", "unknown", "resolved"];

impl Field {
    /// Every field, in the order the contract lists them (used for suggestions).
    pub const ALL: [Field; 7] = [
        Field::Source,
        Field::EventType,
        Field::Outcome,
        Field::ErrorCode,
        Field::Attempts,
        Field::ReceivedAt,
        Field::ProviderId,
    ];

    /// The name an operator types; part of the external contract, so lower-case and exact.
    pub fn name(self) -> &'static str {
        match self {
            Field::Source => "source",
            Field::EventType => "event_type",
            Field::Outcome => "outcome",
            Field::ErrorCode => "error_code",
            Field::Attempts => "attempts",
            Field::ReceivedAt => "received_at",
            Field::ProviderId => "provider_id",
        }
    }

    /// The column in `events`. Equal to [`Field::name`] but for `provider_id` (the dedup
    /// key), kept apart so that a schema rename cannot silently change the contract, or the
    /// other way round.
    pub fn column(self) -> &'static str {
        match self {
            Field::Source => "source",
            Field::EventType => "event_type",
            Field::Outcome => "outcome",
            Field::ErrorCode => "error_code",
            Field::Attempts => "attempts",
            Field::ReceivedAt => "received_at",
            Field::ProviderId => "dedup_key",
        }
    }

    fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    fn kind(self) -> Kind {
        match self {
            Field::Source | Field::EventType | Field::ErrorCode | Field::ProviderId => Kind::Text,
            Field::Outcome => Kind::Outcome,
            Field::Attempts => Kind::Count,
            Field::ReceivedAt => Kind::Time,
        }
    }

    /// Columns that may be NULL, where SQL's `<>` would silently drop the NULL rows.
    fn nullable(self) -> bool {
        matches!(self, Field::EventType | Field::ErrorCode)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A comparison. `In` stands for a list so that "any of these" needs no `OR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    In,
}

impl Op {
    /// The operator as written in an expression (and in the normalised form).
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::In => "IN",
        }
    }

    /// The SQL spelling: `<>` rather than `!=`, since it is the one both backends share by
    /// the standard.
    fn sql(self) -> &'static str {
        match self {
            Op::Ne => "<>",
            other => other.symbol(),
        }
    }

    fn is_ordering(self) -> bool {
        matches!(self, Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A checked value. Times are already unix milliseconds, as `received_at` is stored, so the
/// offset an operator typed cannot change how the comparison runs in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
    /// Unix milliseconds (sub-millisecond digits are dropped, rounding down).
    TimeMs(i64),
}

impl fmt::Display for Value {
    /// The literal as it would be written in an expression: text always quoted (so a value
    /// such as `AND` or one with spaces reads back unambiguously), times in UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => {
                f.write_str("'")?;
                for c in text.chars() {
                    if c == '\'' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("'")
            }
            Value::Int(n) => write!(f, "{n}"),
            Value::TimeMs(ms) => {
                let formatted = OffsetDateTime::from_unix_timestamp_nanos(i128::from(*ms) * 1_000_000)
                    .ok()
                    .and_then(|t| t.format(&Rfc3339).ok());
                match formatted {
                    Some(text) => f.write_str(&text),
                    // Only reachable for a hand-built out-of-range value; parse never makes one.
                    None => write!(f, "{ms}"),
                }
            }
        }
    }
}

/// One condition. `values` holds exactly one value except for `IN`, which holds 1..=100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub field: Field,
    pub op: Op,
    pub values: Vec<Value>,
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.field, self.op)?;
        if self.op == Op::In {
            f.write_str("(")?;
            for (i, value) in self.values.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{value}")?;
            }
            f.write_str(")")
        } else {
            match self.values.first() {
                Some(value) => write!(f, "{value}"),
                None => Ok(()),
            }
        }
    }
}

/// A parsed filter: every clause must hold (they are joined with `AND`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub clauses: Vec<Clause>,
}

/// Why an expression was refused, and where. The column counts characters (not bytes) from
/// 1, across line breaks, so it matches what the operator sees in what they typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct FilterError {
    pub column: usize,
    pub message: String,
}

impl FilterError {
    /// The API error code (answered with HTTP 400).
    pub fn code(&self) -> &'static str {
        "filter_invalid"
    }

    fn new(column: usize, message: impl Into<String>) -> Self {
        Self { column, message: message.into() }
    }
}

/// A parameter to bind, in placeholder order. Times bind as `Int` because `received_at` is
/// a BIGINT of milliseconds on both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlParam {
    Text(String),
    Int(i64),
}

impl From<&Value> for SqlParam {
    fn from(value: &Value) -> Self {
        match value {
            Value::Text(text) => SqlParam::Text(text.clone()),
            Value::Int(n) | Value::TimeMs(n) => SqlParam::Int(*n),
        }
    }
}

/// Parses an operator's filter expression.
///
/// # Errors
///
/// Any expression outside the contract, with the column of the first offending token. An
/// empty (or blank) expression is one too: a caller that means "every event" passes no
/// filter at all, so that choice is explicit.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > MAX_CHARS {
        return Err(FilterError::new(
            MAX_CHARS + 1,
            format!("the expression is {} characters long; the limit is {MAX_CHARS}", chars.len()),
        ));
    }
    let mut parser = Parser { lexer: Lexer { chars, pos: 0 }, peeked: None };
    if parser.peek()?.tok == Tok::End {
        return Err(FilterError::new(1, "the expression is empty"));
    }
    let mut clauses = Vec::new();
    let mut after_and = false;
    loop {
        let field_token = parser.next()?;
        if clauses.len() == MAX_CLAUSES && field_token.tok != Tok::End {
            return Err(FilterError::new(
                field_token.column,
                format!(
                    "too many conditions: at most {MAX_CLAUSES} can be joined with AND \
                     (split the selection into several replays)"
                ),
            ));
        }
        clauses.push(parser.clause(&field_token, after_and)?);
        let token = parser.next()?;
        match &token.tok {
            Tok::End => break,
            Tok::Word(word) if is_keyword(word, "AND") => after_and = true,
            Tok::Word(word) if is_keyword(word, "OR") => {
                return Err(FilterError::new(
                    token.column,
                    "OR is not supported: use IN (...) for several values of one field, \
                     or run two replays",
                ));
            }
            _ => {
                return Err(FilterError::new(
                    token.column,
                    format!("expected AND or the end of the expression, found {}", describe(&token)),
                ));
            }
        }
    }
    Ok(Filter { clauses })
}

impl Filter {
    /// SQL for a `WHERE` clause over the `events` table, with numbered placeholders starting
    /// at `$first` (works on SQLite and PostgreSQL), and the parameters to bind in order.
    /// Placeholders rather than `?` so the caller can put its own parameters before ours.
    /// An empty filter gives `1 = 1`, which both backends accept (SQLite before 3.23 has no
    /// `TRUE`).
    pub fn to_sql(&self, first: usize) -> (String, Vec<SqlParam>) {
        if self.clauses.is_empty() {
            return ("1 = 1".to_owned(), Vec::new());
        }
        let mut params = Vec::new();
        let mut next = first;
        let parts: Vec<String> = self.clauses.iter().map(|clause| clause.to_sql(&mut next, &mut params)).collect();
        (parts.join(" AND "), params)
    }
}

impl Clause {
    /// Always parenthesised, so a caller can AND it with its own conditions safely. Total
    /// even for hand-built clauses with no value: they match nothing rather than panic.
    fn to_sql(&self, next: &mut usize, params: &mut Vec<SqlParam>) -> String {
        let column = self.field.column();
        let mut bind = |value: &Value| {
            params.push(SqlParam::from(value));
            let placeholder = format!("${next}");
            *next += 1;
            placeholder
        };
        if self.op == Op::In {
            if self.values.is_empty() {
                return "(1 = 0)".to_owned();
            }
            let placeholders: Vec<String> = self.values.iter().map(&mut bind).collect();
            return format!("({column} IN ({}))", placeholders.join(", "));
        }
        let Some(value) = self.values.first() else {
            return "(1 = 0)".to_owned();
        };
        let placeholder = bind(value);
        if self.op == Op::Ne && self.field.nullable() {
            // "not E_DB" must still select events that have no error code at all.
            format!("({column} IS NULL OR {column} <> {placeholder})")
        } else {
            format!("({column} {} {placeholder})", self.op.sql())
        }
    }
}

impl fmt::Display for Filter {
    /// The normalised form for audit logs: keywords upper-case, text single-quoted, times in
    /// UTC RFC 3339. It parses back to an equal `Filter`. An empty filter shows as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, clause) in self.clauses.iter().enumerate() {
            if i > 0 {
                f.write_str(" AND ")?;
            }
            write!(f, "{clause}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare word: a field, a keyword or an unquoted value.
    Word(String),
    /// A quoted value, escapes resolved.
    Quoted(String),
    /// A run of `= ! < >`, checked by the parser so `==` can get its own hint.
    Op(String),
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based, in characters.
    column: usize,
    /// The source text, for messages.
    raw: String,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

fn is_bare(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-')
}

fn is_operator_char(c: char) -> bool {
    matches!(c, '=' | '!' | '<' | '>')
}

impl Lexer {
    /// One token at a time, driven by the parser, so the leftmost problem is the one
    /// reported.
    fn next(&mut self) -> Result<Token, FilterError> {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        let column = start + 1;
        let Some(&c) = self.chars.get(start) else {
            return Ok(Token { tok: Tok::End, column, raw: String::new() });
        };
        let tok = match c {
            '(' => {
                self.pos += 1;
                Tok::LParen
            }
            ')' => {
                self.pos += 1;
                Tok::RParen
            }
            ',' => {
                self.pos += 1;
                Tok::Comma
            }
            '\'' | '"' => Tok::Quoted(self.quoted(c)?),
            c if is_operator_char(c) => Tok::Op(self.run(is_operator_char)),
            c if is_bare(c) => Tok::Word(self.run(is_bare)),
            other => return Err(unexpected_character(column, other)),
        };
        Ok(Token { tok, column, raw: self.chars[start..self.pos].iter().collect() })
    }

    fn run(&mut self, accept: fn(char) -> bool) -> String {
        let start = self.pos;
        while self.pos < self.chars.len() && accept(self.chars[self.pos]) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn quoted(&mut self, quote: char) -> Result<String, FilterError> {
        let open = self.pos;
        self.pos += 1;
        let mut text = String::new();
        loop {
            let Some(&c) = self.chars.get(self.pos) else {
                return Err(FilterError::new(
                    open + 1,
                    format!(
                        "unterminated string: the {quote} opened here is never closed \
                         (write \\{quote} for a {quote} inside the value)"
                    ),
                ));
            };
            self.pos += 1;
            if c == quote {
                return Ok(text);
            }
            if c != '\\' {
                text.push(c);
                continue;
            }
            match self.chars.get(self.pos) {
                Some(&escaped @ ('\'' | '"' | '\\')) => {
                    text.push(escaped);
                    self.pos += 1;
                }
                // A trailing backslash: the loop reports the unclosed quote.
                None => {}
                Some(&other) => {
                    return Err(FilterError::new(
                        self.pos,
                        format!(
                            "unknown escape \"\\{other}\" in a quoted value: only \\', \\\" \
                             and \\\\ are allowed"
                        ),
                    ));
                }
            }
        }
    }
}

fn unexpected_character(column: usize, c: char) -> FilterError {
    let hint = match c {
        '&' => "use AND to join conditions",
        '|' => "OR is not supported: use IN (...) for several values of one field, or run two replays",
        _ => "values with other characters go in quotes",
    };
    FilterError::new(column, format!("unexpected character \"{c}\" ({hint})"))
}

// ---------------------------------------------------------------------------------------
// Parsing

struct Parser {
    lexer: Lexer,
    peeked: Option<Token>,
}

fn is_keyword(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

fn is_reserved(word: &str) -> bool {
    ["AND", "OR", "IN"].iter().any(|k| is_keyword(word, k))
}

/// How a token is shown in a message: as typed, shortened if long.
fn describe(token: &Token) -> String {
    const LIMIT: usize = 40;
    let mut raw: String = token.raw.chars().take(LIMIT).collect();
    if token.raw.chars().count() > LIMIT {
        raw.push('…');
    }
    match token.tok {
        Tok::End => "the end of the expression".to_owned(),
        // Already shows its own quotes.
        Tok::Quoted(_) => raw,
        _ => format!("\"{raw}\""),
    }
}

impl Parser {
    fn peek(&mut self) -> Result<&Token, FilterError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn next(&mut self) -> Result<Token, FilterError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next(),
        }
    }

    fn clause(&mut self, field_token: &Token, after_and: bool) -> Result<Clause, FilterError> {
        let field = field(field_token, after_and)?;
        let op_token = self.next()?;
        let op = operator(&op_token, field)?;
        if op.is_ordering() && field.kind() != Kind::Count && field.kind() != Kind::Time {
            return Err(FilterError::new(
                op_token.column,
                format!("{field} compares only with =, != or IN, found \"{}\"", op.symbol()),
            ));
        }
        let values = if op == Op::In {
            self.in_list(field)?
        } else {
            let token = self.next()?;
            let after = format!("after \"{}\"", op.symbol());
            vec![value(&token, field, &after)?]
        };
        Ok(Clause { field, op, values })
    }

    fn in_list(&mut self, field: Field) -> Result<Vec<Value>, FilterError> {
        let open = self.next()?;
        if open.tok != Tok::LParen {
            return Err(FilterError::new(
                open.column,
                format!("expected \"(\" after IN, found {} (write IN (a, b))", describe(&open)),
            ));
        }
        if self.peek()?.tok == Tok::RParen {
            let close = self.next()?;
            return Err(FilterError::new(close.column, "the IN list is empty: give at least one value"));
        }
        let mut values = Vec::new();
        let mut after = "after \"(\"";
        loop {
            let token = self.next()?;
            if values.len() == MAX_IN_VALUES {
                return Err(FilterError::new(
                    token.column,
                    format!(
                        "the IN list has more than {MAX_IN_VALUES} values (split it into \
                         several replays)"
                    ),
                ));
            }
            values.push(value(&token, field, after)?);
            let separator = self.next()?;
            match separator.tok {
                Tok::Comma => after = "after \",\"",
                Tok::RParen => return Ok(values),
                _ => {
                    return Err(FilterError::new(
                        separator.column,
                        format!(
                            "expected \",\" or \")\" in the IN list opened at column {}, found {}",
                            open.column,
                            describe(&separator)
                        ),
                    ));
                }
            }
        }
    }
}

fn field(token: &Token, after_and: bool) -> Result<Field, FilterError> {
    let expected = if after_and {
        format!("expected a field name after AND ({FIELD_LIST})")
    } else {
        format!("expected a field name ({FIELD_LIST})")
    };
    let message = match &token.tok {
        Tok::Word(word) => {
            if let Some(field) = Field::from_name(word) {
                return Ok(field);
            }
            if is_keyword(word, "NOT") {
                "NOT is not supported: use != (several != joined with AND for a list)".to_owned()
            } else if is_reserved(word) {
                format!("{expected}, found \"{word}\"")
            } else {
                match suggest_field(word) {
                    Some(field) => {
                        format!("unknown field \"{word}\" (did you mean \"{field}\"?)")
                    }
                    None => format!("unknown field \"{word}\" (fields are {FIELD_LIST})"),
                }
            }
        }
        Tok::Quoted(_) => format!("{expected}, found {} (field names are not quoted)", describe(token)),
        Tok::LParen => format!(
            "{expected}, found \"(\" (parentheses are only for IN lists; \
             conditions are joined with AND alone)"
        ),
        _ => format!("{expected}, found {}", describe(token)),
    };
    Err(FilterError::new(token.column, message))
}

fn operator(token: &Token, field: Field) -> Result<Op, FilterError> {
    let expected = format!("expected an operator ({OPERATOR_LIST})");
    let message = match &token.tok {
        Tok::Op(symbol) => match symbol.as_str() {
            "=" => return Ok(Op::Eq),
            "!=" => return Ok(Op::Ne),
            ">" => return Ok(Op::Gt),
            "<" => return Ok(Op::Lt),
            ">=" => return Ok(Op::Ge),
            "<=" => return Ok(Op::Le),
            "==" => format!("{expected}, found \"==\" (did you mean \"=\"?)"),
            "<>" => format!("{expected}, found \"<>\" (did you mean \"!=\"?)"),
            "=>" => format!("{expected}, found \"=>\" (did you mean \">=\"?)"),
            "=<" => format!("{expected}, found \"=<\" (did you mean \"<=\"?)"),
            _ => format!("{expected}, found {}", describe(token)),
        },
        Tok::Word(word) if is_keyword(word, "IN") => return Ok(Op::In),
        Tok::Word(word) if is_keyword(word, "NOT") => format!(
            "{expected}, found \"{word}\" (NOT IN is not supported: use != for each value, \
             joined with AND)"
        ),
        Tok::End => format!("{expected} after \"{field}\", found the end of the expression"),
        _ => format!("{expected}, found {}", describe(token)),
    };
    Err(FilterError::new(token.column, message))
}

/// Reads one value for `field`. Quoting never changes meaning: `'3'` is the number 3 for
/// `attempts`, and `'2026-11-26T06:00:00Z'` a time for `received_at`.
fn value(token: &Token, field: Field, after: &str) -> Result<Value, FilterError> {
    let text = match &token.tok {
        Tok::Word(word) if is_reserved(word) => {
            return Err(FilterError::new(
                token.column,
                format!(
                    "expected a value {after}, found the keyword \"{word}\" (quote it, as \
                     '{word}', if you mean the text)"
                ),
            ));
        }
        Tok::Word(text) | Tok::Quoted(text) => text,
        Tok::LParen => {
            return Err(FilterError::new(
                token.column,
                format!("expected a value {after}, found \"(\" (use IN (a, b) for a list)"),
            ));
        }
        _ => {
            return Err(FilterError::new(token.column, format!("expected a value {after}, found {}", describe(token))));
        }
    };
    let found = describe(token);
    let fail = |message: String| Err(FilterError::new(token.column, message));
    match field.kind() {
        Kind::Text => Ok(Value::Text(text.clone())),
        Kind::Outcome => {
            if OUTCOMES.contains(&text.as_str()) {
                Ok(Value::Text(text.clone()))
            } else {
                fail(format!("{field} must be one of {}, found {found}", OUTCOMES.join(", ")))
            }
        }
        Kind::Count => {
            let digits = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit());
            match text.parse::<i64>() {
                Ok(n) if digits => Ok(Value::Int(n)),
                Ok(_) if text.starts_with('-') => {
                    fail(format!("{field} compares with a whole number, found {found} (it cannot be negative)"))
                }
                Err(_) if digits => fail(format!("{field} compares with a whole number, found {found} (too large)")),
                _ => fail(format!("{field} compares with a whole number, found {found}")),
            }
        }
        Kind::Time => match parse_time_ms(text) {
            Some(ms) => Ok(Value::TimeMs(ms)),
            None => {
                let hint = if parse_time_ms(&format!("{text}T00:00:00Z")).is_some() {
                    format!(" (add a time and zone: {text}T00:00:00Z)")
                } else if parse_time_ms(&format!("{text}Z")).is_some() {
                    " (add a zone, such as Z or +01:00)".to_owned()
                } else {
                    String::new()
                };
                fail(format!(
                    "{field} compares with an RFC 3339 time such as 2026-11-26T06:00:00Z, \
                     found {found}{hint}"
                ))
            }
        },
    }
}

/// Unix milliseconds, rounded down, as `received_at` is stored.
fn parse_time_ms(text: &str) -> Option<i64> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(time.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// The field an unknown name most likely meant: a case or dash slip, a common synonym, or a
/// typo of at most two edits.
fn suggest_field(word: &str) -> Option<Field> {
    const ALIASES: [(&str, Field); 16] = [
        ("provider_event_id", Field::ProviderId),
        ("dedup_key", Field::ProviderId),
        ("delivery_id", Field::ProviderId),
        ("provider", Field::Source),
        ("type", Field::EventType),
        ("event", Field::EventType),
        ("status", Field::Outcome),
        ("result", Field::Outcome),
        ("error", Field::ErrorCode),
        ("code", Field::ErrorCode),
        ("tries", Field::Attempts),
        ("retries", Field::Attempts),
        ("time", Field::ReceivedAt),
        ("timestamp", Field::ReceivedAt),
        ("received", Field::ReceivedAt),
        ("created_at", Field::ReceivedAt),
    ];
    let normal = word.to_ascii_lowercase().replace('-', "_");
    if let Some(field) = Field::from_name(&normal) {
        return Some(field);
    }
    if let Some((_, field)) = ALIASES.iter().find(|(alias, _)| *alias == normal) {
        return Some(*field);
    }
    Field::ALL
        .into_iter()
        .map(|field| (edit_distance(&normal, field.name()), field))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, field)| field)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Expected {
        /// `to_sql(1)` text and parameters.
        Sql(&'static str, Vec<SqlParam>),
        /// The normalised `Display` form.
        Shown(&'static str),
    }
    use Expected::{Shown, Sql};

    fn text(s: &str) -> SqlParam {
        SqlParam::Text(s.to_owned())
    }

    fn int(n: i64) -> SqlParam {
        SqlParam::Int(n)
    }

    /// Parses a good input, compares the expected form, and checks that the normalised form
    /// parses back to the same filter.
    fn check(input: &str, expected: Expected) {
        let filter = parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        match expected {
            Sql(sql, params) => {
                assert_eq!(filter.to_sql(1), (sql.to_owned(), params), "input {input:?}");
            }
            Shown(shown) => assert_eq!(filter.to_string(), shown, "input {input:?}"),
        }
        let normal = filter.to_string();
        let again = parse(&normal).unwrap_or_else(|e| panic!("{normal:?} should parse: {e}"));
        assert_eq!(again, filter, "normalised form {normal:?} of {input:?}");
    }

    fn check_error(input: &str, column: usize, fragment: &str) {
        let err = match parse(input) {
            Ok(filter) => panic!("{input:?} should fail, parsed as {filter}"),
            Err(err) => err,
        };
        assert_eq!(err.column, column, "column for {input:?}: {err}");
        assert!(err.message.contains(fragment), "message for {input:?} should contain {fragment:?}: {err}");
        assert!(err.to_string().starts_with(&format!("at column {column}: ")));
        assert_eq!(err.code(), "filter_invalid");
    }

    #[test]
    fn the_contract_example() {
        check(
            r#"outcome = unknown AND error_code IN ('E_DB', "E_TIMEOUT") AND attempts < 3"#,
            Sql(
                "(outcome = $1) AND (error_code IN ($2, $3)) AND (attempts < $4)",
                vec![text("unknown"), text("E_DB"), text("E_TIMEOUT"), int(3)],
            ),
        );
        check(
            r#"outcome = unknown AND error_code IN ('E_DB', "E_TIMEOUT") AND attempts < 3"#,
            Shown("outcome = 'unknown' AND error_code IN ('E_DB', 'E_TIMEOUT') AND attempts < 3"),
        );
    }

    #[test]
    fn every_operator() {
        let cases = [
            ("attempts = 2", Sql("(attempts = $1)", vec![int(2)])),
            ("attempts != 2", Sql("(attempts <> $1)", vec![int(2)])),
            ("attempts > 2", Sql("(attempts > $1)", vec![int(2)])),
            ("attempts < 2", Sql("(attempts < $1)", vec![int(2)])),
            ("attempts >= 2", Sql("(attempts >= $1)", vec![int(2)])),
            ("attempts <= 2", Sql("(attempts <= $1)", vec![int(2)])),
            ("attempts IN (0, 1)", Sql("(attempts IN ($1, $2))", vec![int(0), int(1)])),
            ("attempts<=2", Sql("(attempts <= $1)", vec![int(2)])),
            ("attempts>=0", Sql("(attempts >= $1)", vec![int(0)])),
            ("attempts!=7", Sql("(attempts <> $1)", vec![int(7)])),
            ("source = stripe", Sql("(source = $1)", vec![text("stripe")])),
            ("source != stripe", Sql("(source <> $1)", vec![text("stripe")])),
            ("source IN (stripe)", Sql("(source IN ($1))", vec![text("stripe")])),
            ("outcome != confirmed", Sql("(outcome <> $1)", vec![text("confirmed")])),
            ("outcome IN (failed, unknown)", Sql("(outcome IN ($1, $2))", vec![text("failed"), text("unknown")])),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn nullable_text_fields_keep_null_rows_on_not_equal() {
        let cases = [
            ("error_code != E_DB", Sql("(error_code IS NULL OR error_code <> $1)", vec![text("E_DB")])),
            ("event_type != invoice.paid", Sql("(event_type IS NULL OR event_type <> $1)", vec![text("invoice.paid")])),
            ("error_code = E_DB", Sql("(error_code = $1)", vec![text("E_DB")])),
            ("event_type IN (a, b)", Sql("(event_type IN ($1, $2))", vec![text("a"), text("b")])),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn placeholders_start_where_asked_and_never_hold_values() {
        let filter = parse("source = 'x'' OR 1=1' AND attempts >= 1").err();
        // A doubled quote is no escape: it ends the string, and what follows is refused.
        assert!(filter.is_some());
        let filter = parse(r"source = 'x\' OR 1=1 --' AND attempts >= 1").unwrap();
        let (sql, params) = filter.to_sql(4);
        assert_eq!(sql, "(source = $4) AND (attempts >= $5)");
        assert_eq!(params, vec![text("x' OR 1=1 --"), int(1)]);
        assert_eq!(Filter::default().to_sql(1), ("1 = 1".to_owned(), vec![]));
        assert_eq!(Filter::default().to_string(), "");
    }

    #[test]
    fn quoting_and_escapes() {
        let cases = [
            ("source = 'stripe'", Sql("(source = $1)", vec![text("stripe")])),
            (r#"source = "stripe""#, Sql("(source = $1)", vec![text("stripe")])),
            (r"source = 'it\'s'", Sql("(source = $1)", vec![text("it's")])),
            (r#"source = "say \"hi\"""#, Sql("(source = $1)", vec![text("say \"hi\"")])),
            (r#"source = "it's""#, Sql("(source = $1)", vec![text("it's")])),
            (r#"source = 'say "hi"'"#, Sql("(source = $1)", vec![text("say \"hi\"")])),
            (r"source = 'back\\slash'", Sql("(source = $1)", vec![text(r"back\slash")])),
            ("source = ''", Sql("(source = $1)", vec![text("")])),
            ("source = 'two words, (and more)'", Sql("(source = $1)", vec![text("two words, (and more)")])),
            ("source = 'café ☕'", Sql("(source = $1)", vec![text("café ☕")])),
            ("source = 'AND'", Sql("(source = $1)", vec![text("AND")])),
            ("attempts = '3'", Sql("(attempts = $1)", vec![int(3)])),
            (r"source = 'it\'s'", Shown(r"source = 'it\'s'")),
            (r#"source = "a\\b""#, Shown(r"source = 'a\\b'")),
            (r#"source = "say \"hi\"""#, Shown(r#"source = 'say "hi"'"#)),
            ("source = 'AND' AND error_code = ''", Shown("source = 'AND' AND error_code = ''")),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn bare_words() {
        let cases = [
            ("event_type = invoice.paid", Sql("(event_type = $1)", vec![text("invoice.paid")])),
            ("error_code = 500", Sql("(error_code = $1)", vec![text("500")])),
            ("source = a_b-c:d+e.f", Sql("(source = $1)", vec![text("a_b-c:d+e.f")])),
            ("source = and_more", Sql("(source = $1)", vec![text("and_more")])),
            ("source = NOT", Sql("(source = $1)", vec![text("NOT")])),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn keywords_are_case_insensitive_fields_are_not() {
        let cases = [
            ("outcome = failed and attempts in (1, 2)", Shown("outcome = 'failed' AND attempts IN (1, 2)")),
            ("source In (a) AnD source iN (b)", Shown("source IN ('a') AND source IN ('b')")),
            ("  outcome=failed  ", Shown("outcome = 'failed'")),
            ("outcome\n=\tfailed\nAND\nattempts\n<\n3", Shown("outcome = 'failed' AND attempts < 3")),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
        check_error("Outcome = failed", 1, "unknown field \"Outcome\" (did you mean \"outcome\"?)");
        check_error("ATTEMPTS = 1", 1, "did you mean \"attempts\"?");
    }

    #[test]
    fn times_with_offsets_become_utc_milliseconds() {
        // 2026-11-26T06:00:00Z
        let six = 1_795_672_800_000;
        let cases = [
            ("received_at >= 2026-11-26T06:00:00Z", Sql("(received_at >= $1)", vec![int(six)])),
            ("received_at >= 2026-11-26T07:00:00+01:00", Sql("(received_at >= $1)", vec![int(six)])),
            ("received_at < 2026-11-26T01:00:00-05:00", Sql("(received_at < $1)", vec![int(six)])),
            ("received_at > '2026-11-26T06:00:00Z'", Sql("(received_at > $1)", vec![int(six)])),
            ("received_at = 2026-11-26T06:00:00.250Z", Sql("(received_at = $1)", vec![int(six + 250)])),
            ("received_at <= 2026-11-26T06:00:00.999999Z", Sql("(received_at <= $1)", vec![int(six + 999)])),
            ("received_at != 1969-12-31T23:59:59.9995Z", Sql("(received_at <> $1)", vec![int(-1)])),
            (
                "received_at IN (2026-11-26T06:00:00Z, 2026-11-26T06:00:01Z)",
                Sql("(received_at IN ($1, $2))", vec![int(six), int(six + 1000)]),
            ),
            ("received_at > 2026-11-26T07:30:00+01:30", Shown("received_at > 2026-11-26T06:00:00Z")),
            ("received_at > 2026-11-26T06:00:00.5Z", Shown("received_at > 2026-11-26T06:00:00.5Z")),
            (
                "received_at >= 2026-11-26T05:00:00Z AND received_at < 2026-11-26T06:00:00Z",
                Sql("(received_at >= $1) AND (received_at < $2)", vec![int(six - 3_600_000), int(six)]),
            ),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn limits_that_hold() {
        let twenty = vec!["attempts >= 0"; MAX_CLAUSES].join(" AND ");
        assert_eq!(parse(&twenty).unwrap().clauses.len(), MAX_CLAUSES);
        let hundred: Vec<String> = (0..MAX_IN_VALUES).map(|i| i.to_string()).collect();
        let filter = parse(&format!("attempts IN ({})", hundred.join(","))).unwrap();
        assert_eq!(filter.to_sql(1).1.len(), MAX_IN_VALUES);
        let long = format!("source = '{}'", "x".repeat(MAX_CHARS - 11));
        assert_eq!(long.chars().count(), MAX_CHARS);
        check(&long, Sql("(source = $1)", vec![text(&"x".repeat(MAX_CHARS - 11))]));
    }

    #[test]
    fn errors_from_the_contract() {
        let cases = [
            ("error_code   foo", 14, "expected an operator (= != > < >= <= IN), found \"foo\""),
            ("outcom = failed", 1, "unknown field \"outcom\" (did you mean \"outcome\"?)"),
            ("outcome = done", 11, "outcome must be one of confirmed, failed, unknown, resolved, found \"done\""),
            ("attempts = many", 12, "attempts compares with a whole number, found \"many\""),
            ("", 1, "the expression is empty"),
            ("   \n\t ", 1, "the expression is empty"),
        ];
        for (input, column, fragment) in cases {
            check_error(input, column, fragment);
        }
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let cases = [
            // unknown fields, with and without a suggestion
            ("status = failed", 1, "unknown field \"status\" (did you mean \"outcome\"?)"),
            ("outcome = failed AND recieved_at > 2026-11-26T06:00:00Z", 22, "did you mean \"received_at\"?"),
            ("attempts < 3 AND event-type = x", 18, "did you mean \"event_type\"?"),
            ("colour = red", 1, "unknown field \"colour\" (fields are source, event_type"),
            ("'outcome' = failed", 1, "found 'outcome' (field names are not quoted)"),
            ("(outcome = failed)", 1, "parentheses are only for IN lists"),
            ("= failed", 1, "expected a field name"),
            // operators
            ("outcome", 8, "expected an operator (= != > < >= <= IN) after \"outcome\", found the end"),
            ("outcome == failed", 9, "found \"==\" (did you mean \"=\"?)"),
            ("attempts <> 3", 10, "did you mean \"!=\"?"),
            ("attempts => 3", 10, "did you mean \">=\"?"),
            ("attempts =< 3", 10, "did you mean \"<=\"?"),
            ("attempts ! 3", 10, "expected an operator (= != > < >= <= IN), found \"!\""),
            ("error_code NOT IN (E_DB)", 12, "NOT IN is not supported"),
            ("NOT outcome = failed", 1, "NOT is not supported"),
            ("outcome 'failed'", 9, "expected an operator (= != > < >= <= IN), found 'failed'"),
            // ordering on text fields
            ("source > stripe", 8, "source compares only with =, != or IN, found \">\""),
            ("event_type < a", 12, "event_type compares only with =, != or IN, found \"<\""),
            ("outcome >= failed", 9, "outcome compares only with =, != or IN, found \">=\""),
            ("attempts < 3 AND error_code <= E", 29, "error_code compares only with =, != or IN"),
            // missing values
            ("outcome =", 10, "expected a value after \"=\", found the end of the expression"),
            ("attempts >= AND source = x", 13, "expected a value after \">=\", found the keyword \"AND\""),
            ("source = or", 10, "found the keyword \"or\" (quote it, as 'or', if you mean the text)"),
            ("source = , x", 10, "expected a value after \"=\", found \",\""),
            ("source = (a, b)", 10, "use IN (a, b) for a list"),
            // values that do not fit the field
            ("outcome = Failed", 11, "outcome must be one of confirmed, failed, unknown, resolved, found \"Failed\""),
            ("outcome IN (failed, 'done')", 21, "found 'done'"),
            ("attempts = -1", 12, "found \"-1\" (it cannot be negative)"),
            ("attempts = 1.5", 12, "attempts compares with a whole number, found \"1.5\""),
            ("attempts = +3", 12, "attempts compares with a whole number, found \"+3\""),
            ("attempts = 99999999999999999999", 12, "(too large)"),
            ("attempts = ''", 12, "attempts compares with a whole number, found ''"),
            (
                "received_at > yesterday",
                15,
                "received_at compares with an RFC 3339 time such as 2026-11-26T06:00:00Z, found \"yesterday\"",
            ),
            ("received_at > 2026-11-26", 15, "(add a time and zone: 2026-11-26T00:00:00Z)"),
            ("received_at > 2026-11-26T06:00:00", 15, "(add a zone, such as Z or +01:00)"),
            ("received_at > 2026-13-01T00:00:00Z", 15, "RFC 3339 time"),
            ("received_at > 1795154400000", 15, "RFC 3339 time"),
            // IN lists
            ("error_code IN ()", 16, "the IN list is empty: give at least one value"),
            ("error_code IN ( )", 17, "the IN list is empty"),
            ("error_code IN E_DB", 15, "expected \"(\" after IN, found \"E_DB\" (write IN (a, b))"),
            ("error_code IN", 14, "expected \"(\" after IN, found the end of the expression"),
            ("error_code IN (E_DB", 20, "expected \",\" or \")\" in the IN list opened at column 15, found the end"),
            (
                "error_code IN (E_DB E_X)",
                21,
                "expected \",\" or \")\" in the IN list opened at column 15, found \"E_X\"",
            ),
            ("error_code IN (E_DB,)", 21, "expected a value after \",\", found \")\""),
            ("error_code IN (,E_DB)", 16, "expected a value after \"(\", found \",\""),
            ("attempts IN (1, x)", 17, "attempts compares with a whole number, found \"x\""),
            // OR and trailing garbage
            (
                "outcome = failed OR outcome = unknown",
                18,
                "OR is not supported: use IN (...) for several values of one field, or run two replays",
            ),
            ("outcome = failed or attempts = 1", 18, "OR is not supported"),
            ("outcome = failed || attempts = 1", 18, "OR is not supported"),
            ("outcome = failed && attempts = 1", 18, "unexpected character \"&\" (use AND to join conditions)"),
            ("outcome = failed attempts < 3", 18, "expected AND or the end of the expression, found \"attempts\""),
            ("outcome = failed)", 17, "expected AND or the end of the expression, found \")\""),
            ("outcome = failed AND", 21, "expected a field name after AND (source, event_type"),
            (
                "outcome = failed AND AND attempts = 1",
                22,
                "expected a field name after AND (source, event_type, outcome, error_code, attempts, received_at, provider_id), found \"AND\"",
            ),
            ("outcome = failed;", 17, "unexpected character \";\""),
            ("source = café", 13, "unexpected character \"é\" (values with other characters go in quotes)"),
            ("outcome = failed AND source = x 'tail'", 33, "found 'tail'"),
            // quoting
            ("source = 'stripe", 10, "unterminated string: the ' opened here is never closed"),
            ("source = \"stripe", 10, "unterminated string: the \" opened here is never closed"),
            (r"source = 'stripe\'", 10, "unterminated string"),
            (r"source = 'stripe\", 10, "unterminated string"),
            ("attempts < 3 AND source = 'ab", 27, "unterminated string"),
            (r"source = 'a\nb'", 12, "unknown escape \"\\n\" in a quoted value"),
            // the leftmost problem wins
            ("outcom = 'x", 1, "unknown field \"outcom\""),
            ("outcome = done 'x", 11, "outcome must be one of"),
        ];
        for (input, column, fragment) in cases {
            check_error(input, column, fragment);
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        check_error("source = 'ü' AND outcome = nope", 28, "outcome must be one of");
        check_error("source = '☕☕☕' AND foo = 1", 20, "unknown field \"foo\"");
    }

    #[test]
    fn long_tokens_are_shortened_in_messages() {
        let input = format!("outcome = {}", "x".repeat(300));
        let err = parse(&input).unwrap_err();
        assert_eq!(err.column, 11);
        assert!(err.message.ends_with(&format!("found \"{}…\"", "x".repeat(40))), "{err}");
    }

    #[test]
    fn limits_that_refuse() {
        let too_long = format!("source = '{}'", "x".repeat(MAX_CHARS - 10));
        check_error(&too_long, MAX_CHARS + 1, "the expression is 2001 characters long; the limit is 2000");

        let mut many = vec!["attempts >= 0"; MAX_CLAUSES + 1].join(" AND ");
        // The 21st condition starts after 20 conditions of 13 chars and 20 " AND ".
        check_error(&many, 20 * 13 + 20 * 5 + 1, "too many conditions: at most 20");
        many.push_str(" AND");
        check_error(&many, 20 * 13 + 20 * 5 + 1, "too many conditions");

        let values: Vec<String> = (0..=MAX_IN_VALUES).map(|i| format!("{i:03}")).collect();
        let input = format!("attempts IN ({})", values.join(","));
        // The 101st value follows "attempts IN (" (13 chars) and 100 values of "NNN,".
        check_error(&input, 13 + 100 * 4 + 1, "the IN list has more than 100 values");
    }

    #[test]
    fn hand_built_filters_stay_total() {
        let filter = Filter {
            clauses: vec![
                Clause { field: Field::Source, op: Op::In, values: vec![] },
                Clause { field: Field::Source, op: Op::Eq, values: vec![] },
                Clause { field: Field::ReceivedAt, op: Op::Gt, values: vec![Value::TimeMs(0)] },
            ],
        };
        assert_eq!(filter.to_sql(1), ("(1 = 0) AND (1 = 0) AND (received_at > $1)".to_owned(), vec![int(0)]));
        assert_eq!(filter.to_string(), "source IN () AND source =  AND received_at > 1970-01-01T00:00:00Z");
    }

    #[test]
    fn suggestions() {
        let cases = [
            ("outcom", Some(Field::Outcome)),
            ("errorcode", Some(Field::ErrorCode)),
            ("Event-Type", Some(Field::EventType)),
            ("attempt", Some(Field::Attempts)),
            ("recieved_at", Some(Field::ReceivedAt)),
            ("retries", Some(Field::Attempts)),
            ("type", Some(Field::EventType)),
            ("zzz", None),
            ("x", None),
        ];
        for (word, expected) in cases {
            assert_eq!(suggest_field(word), expected, "{word}");
        }
    }
}
