//! The claims checker for `meshctl probe -o json` reports: every clause of a
//! verdict's summary must cite evidence items that exist, and every item
//! must say where it came from — a check that is in the run and was not
//! skipped, a capture, or an inventory object (DESIGN §5). Written against
//! the JSON, independently of the coordinator's own checker, so the two
//! keep each other honest.

use serde_json::Value;

/// Every unsupported claim or unsourced evidence item of `report`, in
/// words; empty when the verdict states only what its evidence backs.
pub fn unsupported_claims(report: &Value) -> Vec<String> {
    let v = &report["verdict"];
    let mut out = Vec::new();
    let evidence = v["evidence"].as_array().map_or(&[][..], Vec::as_slice);
    let claims = v["claims"].as_array().map_or(&[][..], Vec::as_slice);
    let summary = v["summary"].as_str().unwrap_or_default();
    let texts: Vec<&str> = claims
        .iter()
        .map(|c| c["text"].as_str().unwrap_or_default())
        .collect();
    // A verdict that claims nothing may say only that (the no-decision
    // summaries); anything else must be its claims joined.
    if !claims.is_empty() && texts.join("; ") != summary {
        out.push(format!(
            "the summary {summary:?} is not its claims joined: {texts:?}"
        ));
    }
    for c in claims {
        let text = c["text"].as_str().unwrap_or_default();
        let cited = c["evidence"].as_array().map_or(&[][..], Vec::as_slice);
        if cited.is_empty() {
            out.push(format!("claim {text:?} cites no evidence"));
        }
        for i in cited {
            let i = i.as_u64().and_then(|i| usize::try_from(i).ok());
            if i.is_none_or(|i| i >= evidence.len()) {
                out.push(format!(
                    "claim {text:?} cites evidence {i:?}, which does not exist"
                ));
            }
        }
    }
    let checks = report["checks"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, e) in evidence.iter().enumerate() {
        let s = &e["source"];
        if let Some(name) = s["check"].as_str() {
            let ran = checks
                .iter()
                .find(|c| c["name"] == name && c["from"] == s["from"] && c["to"] == s["to"]);
            match ran {
                None => out.push(format!(
                    "evidence {i} cites check {s}, which is not in the run"
                )),
                Some(c) if c["status"] == "skipped" => {
                    out.push(format!("evidence {i} cites check {s}, which was skipped"));
                }
                Some(_) => {}
            }
        } else if !(s["capture"].is_string() || s["inventory"].is_string()) {
            out.push(format!("evidence {i} says not where it came from: {e}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_backed_verdict_passes_and_each_defect_is_named() {
        let good = json!({
            "checks": [{"name": "icmp", "from": "a", "to": "b", "status": "fail"},
                       {"name": "tcp_connect", "from": "a", "to": "b:80", "status": "skipped"}],
            "verdict": {
                "summary": "b gets no reply; a rule drops it on b",
                "claims": [{"text": "b gets no reply", "evidence": [0]},
                           {"text": "a rule drops it on b", "evidence": [0, 1]}],
                "evidence": [{"source": {"check": "icmp", "from": "a", "to": "b"}},
                             {"source": {"capture": "b/eth0"}}]
            }
        });
        assert_eq!(unsupported_claims(&good), Vec::<String>::new());

        let mut bad = good.clone();
        bad["verdict"]["summary"] = json!("b gets no reply; the host is up (TCP connects)");
        bad["verdict"]["claims"][1] =
            json!({"text": "the host is up (TCP connects)", "evidence": [2]});
        bad["verdict"]["evidence"][1] =
            json!({"source": {"check": "tcp_connect", "from": "a", "to": "b:80"}});
        let found = unsupported_claims(&bad);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("cites evidence Some(2)"), "{found:?}");
        assert!(found[1].contains("was skipped"), "{found:?}");
    }
}
