//! Just enough Kubernetes protobuf to read the access reviews kubectl sends as
//! `application/vnd.kubernetes.protobuf` (`kubectl auth can-i`). Responses are always JSON,
//! which clients accept because they list `application/json` in `Accept`.

use serde_json::{Value, json};

use crate::object;

/// The envelope magic of Kubernetes protobuf bodies.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug)]
struct Field<'a> {
    number: u64,
    bytes: Option<&'a [u8]>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(buf, &mut pos)?;
                out.push(Field {
                    number,
                    bytes: None,
                });
            }
            1 => pos = pos.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                out.push(Field {
                    number,
                    bytes: Some(buf.get(pos..end)?),
                });
                pos = end;
            }
            5 => pos = pos.checked_add(4)?,
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(out)
}

fn field<'a>(fs: &[Field<'a>], n: u64) -> Option<&'a [u8]> {
    fs.iter()
        .rev()
        .find(|f| f.number == n)
        .and_then(|f| f.bytes)
}

fn string_fields(buf: &[u8], names: &[(u64, &str)]) -> Option<Value> {
    let fs = fields(buf)?;
    let mut out = serde_json::Map::new();
    for (n, name) in names {
        if let Some(b) = field(&fs, *n) {
            out.insert(
                (*name).to_owned(),
                String::from_utf8(b.to_vec()).ok()?.into(),
            );
        }
    }
    Some(Value::Object(out))
}

/// Decodes a `SelfSubjectAccessReview` or `SubjectAccessReview` protobuf body into its JSON form.
pub fn decode_access_review(body: &[u8]) -> Option<Value> {
    let unknown = fields(body.strip_prefix(MAGIC)?)?;
    let type_meta = string_fields(field(&unknown, 1)?, &[(1, "apiVersion"), (2, "kind")])?;
    let raw = fields(field(&unknown, 2)?)?;
    let spec = fields(field(&raw, 2).unwrap_or_default())?;
    let resource = [
        (1, "namespace"),
        (2, "verb"),
        (3, "group"),
        (4, "version"),
        (5, "resource"),
        (6, "subresource"),
        (7, "name"),
    ];
    let mut spec_json = json!({});
    if let Some(ra) = field(&spec, 1) {
        object::set(
            &mut spec_json,
            &["resourceAttributes"],
            string_fields(ra, &resource)?,
        );
    }
    if let Some(nra) = field(&spec, 2) {
        object::set(
            &mut spec_json,
            &["nonResourceAttributes"],
            string_fields(nra, &[(1, "path"), (2, "verb")])?,
        );
    }
    // SubjectAccessReviewSpec: user (3), groups (4, repeated).
    if type_meta.get("kind").and_then(Value::as_str) == Some("SubjectAccessReview") {
        if let Some(u) = field(&spec, 3) {
            object::set(
                &mut spec_json,
                &["user"],
                String::from_utf8(u.to_vec()).ok()?.into(),
            );
        }
        let groups: Option<Vec<Value>> = spec
            .iter()
            .filter(|f| f.number == 4)
            .map(|f| {
                f.bytes
                    .and_then(|b| String::from_utf8(b.to_vec()).ok())
                    .map(Value::from)
            })
            .collect();
        object::set(&mut spec_json, &["groups"], Value::Array(groups?));
    }
    let mut v = type_meta;
    object::set(&mut v, &["metadata"], json!({}));
    object::set(&mut v, &["spec"], spec_json);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(n: u64, b: &[u8]) -> Vec<u8> {
        let mut v = vec![
            u8::try_from((n << 3) | 2).unwrap(),
            u8::try_from(b.len()).unwrap(),
        ];
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn decodes_a_self_subject_access_review() {
        let ra = [
            ld(1, b"payments"),
            ld(2, b"create"),
            ld(5, b"pods"),
            ld(6, b"exec"),
        ]
        .concat();
        let raw = [ld(1, b""), ld(2, &ld(1, &ra))].concat();
        let tm = [
            ld(1, b"authorization.k8s.io/v1"),
            ld(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), ld(1, &tm), ld(2, &raw)].concat();
        let v = decode_access_review(&body).unwrap();
        assert_eq!(v["spec"]["resourceAttributes"]["subresource"], "exec");
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert!(decode_access_review(b"k8s\0\x0a\xff").is_none());
        assert!(decode_access_review(b"garbage").is_none());
    }
}
