//! nft rules back as text, the way `nft list` prints them (near enough to
//! find the rule there): for evidence and the listed NAT rules.

use super::{Expr, Op, Rule, Stmt, Verdict};

/// The rule as `nft list` prints it, near enough to find it there.
pub fn render(rule: &Rule) -> String {
    rule.stmts
        .iter()
        .map(render_stmt)
        .collect::<Vec<_>>()
        .join(" ")
}

fn render_stmt(s: &Stmt) -> String {
    match s {
        Stmt::Match(l, Op::Ne, r) => format!("{} != {}", render_expr(l), render_expr(r)),
        Stmt::Match(l, _, r) => format!("{} {}", render_expr(l), render_expr(r)),
        Stmt::Verdict(v) => render_verdict(v),
        Stmt::Vmap(k, d) => format!("{} vmap {}", render_expr(k), render_expr(d)),
        Stmt::Dnat(a, p) => match (a, p) {
            (Some(a), Some(p)) => format!("dnat to {a}:{p}"),
            (Some(a), None) => format!("dnat to {a}"),
            _ => "dnat".to_owned(),
        },
        Stmt::Redirect(Some(p)) => format!("redirect to :{p}"),
        Stmt::Redirect(None) => "redirect".to_owned(),
        Stmt::Reject => "reject".to_owned(),
        Stmt::Counter(n) => format!("counter packets {n}"),
        Stmt::Masquerade => "masquerade".to_owned(),
        Stmt::Unrecognized(kind) => format!("<{kind}>"),
    }
}

fn render_verdict(v: &Verdict) -> String {
    match v {
        Verdict::Jump(t) => format!("jump {t}"),
        Verdict::Goto(t) => format!("goto {t}"),
        Verdict::Accept => "accept".to_owned(),
        Verdict::Drop => "drop".to_owned(),
        Verdict::Return => "return".to_owned(),
        Verdict::Continue => "continue".to_owned(),
    }
}

fn render_expr(e: &Expr) -> String {
    match e {
        Expr::Str(s) => s.clone(),
        Expr::Num(n) => n.to_string(),
        Expr::SetRef(n) => format!("@{n}"),
        Expr::Prefix(a, l) => format!("{a}/{l}"),
        Expr::Range(lo, hi) => format!("{}-{}", render_expr(lo), render_expr(hi)),
        Expr::Payload(p, f) => format!("{p} {f}"),
        Expr::Meta(k) => format!("meta {k}"),
        Expr::Ct(k) => format!("ct {k}"),
        Expr::Fib(flags, result) => format!("fib {} {result}", flags.join(" . ")),
        Expr::Numgen(n) => format!("numgen random mod {n}"),
        Expr::Concat(parts) => parts
            .iter()
            .map(render_expr)
            .collect::<Vec<_>>()
            .join(" . "),
        Expr::Set(items) => format!(
            "{{ {} }}",
            items.iter().map(render_expr).collect::<Vec<_>>().join(", ")
        ),
        Expr::VerdictMap(elems) => format!(
            "{{ {} }}",
            elems
                .iter()
                .map(|(k, v)| format!("{} : {}", render_expr(k), render_verdict(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Expr::Unrecognized(kind) => format!("<{kind}>"),
    }
}
