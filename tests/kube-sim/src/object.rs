//! Setting fields of JSON objects without `serde_json::Value`'s `IndexMut`, which panics when
//! the value indexed is neither an object nor null.

use serde_json::{Map, Value};

/// `v[path[0]][path[1]]… = value`, as serde_json's `IndexMut` does it (null becomes an empty
/// object, a missing key is inserted), except that `v` is left as it is, instead of a panic,
/// when a step of the path is neither an object nor null.
pub(crate) fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut slot = Some(v);
    for key in path {
        slot = slot.and_then(|s| field_mut(s, key));
    }
    if let Some(slot) = slot {
        *slot = value;
    }
}

/// `&mut v[key]`, or `None` where that would panic.
fn field_mut<'v>(v: &'v mut Value, key: &str) -> Option<&'v mut Value> {
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    Some(v.as_object_mut()?.entry(key).or_insert(Value::Null))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sets_like_index_mut_without_panicking() {
        let mut v = json!({"a": 1});
        set(&mut v, &["b", "c"], json!(2));
        set(&mut v, &["a"], json!(3));
        assert_eq!(v, json!({"a": 3, "b": {"c": 2}}));
        let mut null = Value::Null;
        set(&mut null, &["x"], json!(true));
        assert_eq!(null, json!({"x": true}));
        // Where `v["a"]["d"] = …` would panic (`a` is a number), nothing changes.
        set(&mut v, &["a", "d"], json!(4));
        assert_eq!(v, json!({"a": 3, "b": {"c": 2}}));
    }
}
