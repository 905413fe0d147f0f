//! Strict field validation, as `kubectl apply` gets it from an API server
//! (`fieldValidation=Strict`, the default of kubectl since 1.27): a field
//! the Rollout's schema does not know is an error naming the field, never
//! silently dropped. The schema is the CRD's own (the one `rollwise crd`
//! prints), so what the operator would be given and what is checked here
//! cannot differ. Pure: a `serde_json::Value` in, errors out.

use serde_json::Value;

use super::Rollout;

/// The fields of `metadata` an object may carry (`ObjectMeta`).
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// Every field of a Rollout document its schema does not know, as
/// `unknown field "spec.analysis.compare[0].tolerence" (did you mean
/// "tolerance"?)`, in document order. Empty when there is none.
pub fn unknown_fields(doc: &Value) -> Vec<String> {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(Rollout::crd()).unwrap_or(Value::Null);
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = Vec::new();
    let Some(map) = doc.as_object() else {
        return out;
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if let Some(meta) = value.as_object() {
                    for k in meta.keys() {
                        if !OBJECT_META.contains(&k.as_str()) {
                            out.push(unknown(&format!("metadata.{k}"), k, OBJECT_META));
                        }
                    }
                }
            }
            _ => match schema["properties"].get(key) {
                Some(s) => walk(value, s, key, &mut out),
                None => out.push(unknown(
                    key,
                    key,
                    &["apiVersion", "kind", "metadata", "spec"],
                )),
            },
        }
    }
    out
}

fn walk(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let known: Vec<&str> = props.keys().map(String::as_str).collect();
                for (k, v) in map {
                    let here = format!("{path}.{k}");
                    match props.get(k) {
                        Some(s) => walk(v, s, &here, out),
                        None => out.push(unknown(&here, k, &known)),
                    }
                }
            } else if let Some(extra) = schema.get("additionalProperties")
                && extra.is_object()
            {
                for (k, v) in map {
                    walk(v, extra, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn unknown(path: &str, key: &str, known: &[&str]) -> String {
    let close = known
        .iter()
        .map(|k| {
            (
                distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    match close {
        Some((_, k)) => format!("unknown field \"{path}\" (did you mean \"{k}\"?)"),
        None => format!(
            "unknown field \"{path}\" (known here: {})",
            known.join(", ")
        ),
    }
}

/// Levenshtein distance (short names only: O(n·m)).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(spec: Value) -> Value {
        json!({"apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "checkout", "labels": {"a": "b"}}, "spec": spec})
    }

    fn spec() -> Value {
        json!({
            "stable": {"service": "v1"}, "canary": {"service": "v2", "scaleDownOnRollback": true},
            "trafficRouting": {"replicas": {}},
            "steps": [{"setWeight": 5}, {"pause": {"duration": "1m"}}],
            "analysis": {"compare": [{"name": "e", "requests": "r", "failures": "f", "tolerance": "20%"}]}
        })
    }

    #[test]
    fn a_known_rollout_has_no_unknown_field() {
        assert_eq!(unknown_fields(&doc(spec())), Vec::<String>::new());
    }

    #[test]
    fn misspelled_fields_are_named_with_their_path_and_the_likely_name() {
        let mut s = spec();
        s["analysis"]["compare"][0]["tolerence"] = json!(0.005);
        s["canary"]["scaleDownOnRolback"] = json!(true);
        s["steps"][1]["pause"]["durration"] = json!("1m");
        let mut d = doc(s);
        d["metadata"]["nmae"] = json!("x");
        d["sepc"] = json!({});
        let got = unknown_fields(&d);
        for want in [
            r#"unknown field "metadata.nmae" (did you mean "name"?)"#,
            r#"unknown field "spec.analysis.compare[0].tolerence" (did you mean "tolerance"?)"#,
            r#"unknown field "spec.canary.scaleDownOnRolback" (did you mean "scaleDownOnRollback"?)"#,
            r#"unknown field "spec.steps[1].pause.durration" (did you mean "duration"?)"#,
            r#"unknown field "sepc" (did you mean "spec"?)"#,
        ] {
            assert!(got.iter().any(|g| g == want), "{want} not in {got:#?}");
        }
        assert_eq!(got.len(), 5, "{got:#?}");
    }
}
