//! The claims checker for `meshctl probe -o json` reports: every clause of a
//! verdict's summary must cite evidence items that exist, and every item
//! must say where it came from — a check that is in the run and was not
//! skipped, a capture, or an inventory object (DESIGN §5); and every path
//! step must be one of the known legs and actions, observed by a check that
//! ran (when it names one), and cite existing evidence for the blocker it
//! names. Written against
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
        if s["check"].is_string() {
            if let Some(why) = not_run(checks, s) {
                out.push(format!("evidence {i} cites check {s}, which {why}"));
            }
        } else if !(s["capture"].is_string() || s["inventory"].is_string()) {
            out.push(format!("evidence {i} says not where it came from: {e}"));
        }
    }
    let path = v["path"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, step) in path.iter().enumerate() {
        if !LEGS.contains(&step["leg"].as_str().unwrap_or_default())
            || !ACTIONS.contains(&step["action"].as_str().unwrap_or_default())
        {
            out.push(format!(
                "path step {i} has an unknown leg or action: {step}"
            ));
        }
        if let Some(why) = not_run(checks, &step["source"]) {
            out.push(format!(
                "path step {i} was observed by check {}, which {why}",
                step["source"]
            ));
        }
        let cited = step["evidence"].as_array().map_or(&[][..], Vec::as_slice);
        if step["resource"].is_object() && cited.is_empty() {
            out.push(format!(
                "path step {i} names a blocker without evidence: {step}"
            ));
        }
        for n in cited {
            if n.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .is_none_or(|n| n >= evidence.len())
            {
                out.push(format!(
                    "path step {i} cites evidence {n}, which does not exist"
                ));
            }
        }
    }
    out
}

/// The legs and actions a path step may have.
const LEGS: [&str; 2] = ["forward", "return"];
const ACTIONS: [&str; 8] = [
    "sent",
    "forwarded",
    "nated",
    "encapsulated",
    "delivered",
    "answered",
    "rejected",
    "dropped",
];

/// Why the check `source` names is not a check that ran; `None` when it
/// ran or `source` names no check.
fn not_run(checks: &[Value], source: &Value) -> Option<&'static str> {
    let name = source["check"].as_str()?;
    match checks
        .iter()
        .find(|c| c["name"] == name && c["from"] == source["from"] && c["to"] == source["to"])
    {
        None => Some("is not in the run"),
        Some(c) if c["status"] == "skipped" => Some("was skipped"),
        Some(_) => None,
    }
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

    #[test]
    fn path_steps_are_checked_like_claims() {
        let mut r = json!({
            "checks": [{"name": "icmp", "from": "a", "to": "b", "status": "fail"},
                       {"name": "tcp_connect", "from": "a", "to": "b:80", "status": "skipped"}],
            "verdict": {
                "summary": "", "claims": [],
                "evidence": [{"source": {"check": "icmp", "from": "a", "to": "b"}}],
                "path": [
                    {"leg": "forward", "at": "a", "action": "sent",
                     "source": {"check": "icmp", "from": "a", "to": "b"}},
                    {"leg": "forward", "at": "between a and b", "action": "dropped",
                     "resource": {"kind": "route", "name": "b: blackhole a"}, "evidence": [0]}
                ]
            }
        });
        assert_eq!(unsupported_claims(&r), Vec::<String>::new());
        r["verdict"]["path"][0]["source"] =
            json!({"check": "tcp_connect", "from": "a", "to": "b:80"});
        r["verdict"]["path"][1]["evidence"] = json!([]);
        r["verdict"]["path"]
            .as_array_mut()
            .expect("path")
            .push(json!(
            {"leg": "sideways", "at": "b", "action": "teleported", "evidence": [7]}));
        let found = unsupported_claims(&r);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("was skipped"), "{found:?}");
        assert!(found[1].contains("without evidence"), "{found:?}");
        assert!(found[2].contains("unknown leg or action"), "{found:?}");
        assert!(found[3].contains("cites evidence 7"), "{found:?}");
    }
}
