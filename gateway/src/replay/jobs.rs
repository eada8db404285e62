//! Listing replay jobs, newest first, a page at a time: the checks `GET /v1/replays` and the
//! console's replays page both make before [`Store::list_replays`](crate::store::Store::list_replays),
//! so the two faces take (and refuse) the same queries.

use crate::store::ReplayListQuery;

/// A job's states, as `state` filters them.
pub const STATES: [&str; 5] = ["running", "paused", "completed", "cancelled", "failed"];
/// Jobs per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 50;

/// The store's query for a page of jobs, or why the request is wrong (the API's
/// `invalid_query` message). The source's scope is the caller's to check.
pub fn list_query(
    state: Option<String>,
    source: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
) -> Result<ReplayListQuery, String> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=1000).contains(&limit) {
        return Err("`limit` must be 1 to 1000".into());
    }
    if let Some(state) = state.as_deref().filter(|s| !STATES.contains(s)) {
        return Err(format!("`state` `{state}` is not one of {}", STATES.join(", ")));
    }
    if let Some(cursor) = cursor.as_deref().filter(|c| !c.starts_with("rpl_") || c.len() > 64) {
        return Err(format!("`cursor` `{cursor}` is not a replay id"));
    }
    Ok(ReplayListQuery { before: cursor, limit, state, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_query_is_checked_before_the_store_sees_it() {
        let q = list_query(Some("paused".into()), Some("orders".into()), None, Some("rpl_01".into())).unwrap();
        assert_eq!((q.limit, q.state.as_deref(), q.before.as_deref()), (DEFAULT_LIMIT, Some("paused"), Some("rpl_01")));
        assert!(list_query(None, None, Some(0), None).unwrap_err().contains("`limit`"));
        assert!(list_query(None, None, Some(1001), None).is_err());
        assert!(list_query(Some("done".into()), None, None, None).unwrap_err().contains("not one of running"));
        assert!(list_query(None, None, None, Some("evt_1".into())).unwrap_err().contains("not a replay id"));
    }
}
