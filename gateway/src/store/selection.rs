//! A condition over `events` built in code, with users' values as bound parameters: what
//! a replay selects and what the event list filters by.

/// A value bound to a placeholder of a [`Selection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlParam {
    Text(String),
    Int(i64),
}

/// For statements run on the SQLite writer's own handle (`commit::on_sqlite_writer`).
impl rusqlite::ToSql for SqlParam {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match self {
            SqlParam::Text(text) => text.as_str().into(),
            SqlParam::Int(n) => (*n).into(),
        })
    }
}

/// A condition over `events`, written with `?` placeholders that the store numbers when it
/// places the condition into a statement. Only code writes the SQL; users' values are params.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    sql: Vec<String>,
    params: Vec<SqlParam>,
}

impl Selection {
    /// Adds `AND (clause)`; `clause` has one `?` per param, in order.
    pub fn and(&mut self, clause: &str, params: Vec<SqlParam>) -> &mut Self {
        debug_assert_eq!(clause.matches('?').count(), params.len());
        self.sql.push(format!("({clause})"));
        self.params.extend(params);
        self
    }

    /// The values to bind, in placeholder order.
    pub(super) fn params(&self) -> &[SqlParam] {
        &self.params
    }

    /// The condition with placeholders numbered from `$first`.
    pub(super) fn render(&self, first: usize) -> String {
        if self.sql.is_empty() {
            return "1 = 1".into();
        }
        let joined = self.sql.join(" AND ");
        let mut out = String::with_capacity(joined.len() + 16);
        let mut n = first;
        for ch in joined.chars() {
            if ch == '?' {
                out.push_str(&format!("${n}"));
                n += 1;
            } else {
                out.push(ch);
            }
        }
        out
    }
}

/// Binds a [`Selection`]'s parameters, in order, to a sqlx query.
macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                $crate::store::SqlParam::Text(t) => q.bind(t.clone()),
                $crate::store::SqlParam::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

pub(super) use bind_all;
