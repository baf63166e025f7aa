//! The WIT contract: the package parses and validates with wasm-tools, every item is
//! documented, and the built component exports exactly it and imports no sockets.

use std::path::{Path, PathBuf};
use std::process::Command;

use mailplug_tests::wasm_path;

fn wit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("wit")
}

fn wasm_tools(args: &[&str]) -> String {
    let o = Command::new("wasm-tools").args(args).output().expect("wasm-tools is installed (tests/run.sh installs it)");
    assert!(o.status.success(), "wasm-tools {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn wit_package_parses() {
    let out = wasm_tools(&["component", "wit", wit_dir().to_str().expect("utf8")]);
    assert!(out.contains("package mailplug:connector@0.1.0"), "{out}");
    for item in ["interface types", "interface session", "interface inbound", "interface outbound", "world connector"] {
        assert!(out.contains(item), "{item} missing from the package");
    }
}

/// Every interface, world, type, function, record field, variant case and enum case in `wit/`
/// has a `///` doc comment right above it.
#[test]
fn every_wit_item_is_documented() {
    let mut undocumented = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(wit_dir()).expect("wit dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("wit") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        // The kind of each open block, so members of records, variants and enums are checked.
        let mut blocks: Vec<&str> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with("//") {
                continue;
            }
            let kind = ["interface", "world", "record", "variant", "enum", "flags", "resource"]
                .into_iter()
                .find(|k| t.starts_with(&format!("{k} ")));
            let in_members = matches!(blocks.last(), Some(&("record" | "variant" | "enum" | "flags")));
            let is_item = kind.is_some()
                || t.starts_with("type ")
                || t.contains(": func(")
                || t.starts_with("constructor(")
                || (in_members && !t.starts_with('}'));
            if is_item {
                checked += 1;
                let prev = lines[..i].iter().rev().map(|l| l.trim()).find(|l| !l.is_empty()).unwrap_or("");
                if !prev.starts_with("///") {
                    undocumented.push(format!("{}:{}: {t}", path.display(), i + 1));
                }
            }
            if t.ends_with('{') {
                blocks.push(kind.unwrap_or("other"));
            }
            if t.starts_with('}') {
                blocks.pop();
            }
        }
    }
    assert!(checked > 100, "the check saw only {checked} items; is it reading the WIT files?");
    assert!(undocumented.is_empty(), "undocumented WIT items:\n{}", undocumented.join("\n"));
}

#[test]
fn component_exports_the_contract_and_imports_no_sockets() {
    let wasm = wasm_path();
    let wasm = wasm.to_str().expect("utf8");
    wasm_tools(&["validate", wasm]);
    let world = wasm_tools(&["component", "wit", wasm]);
    for export in ["session", "parse", "inbound", "outbound", "oauth", "presets", "check", "discover"] {
        let export = format!("mailplug:connector/{export}@0.1.0");
        assert!(world.contains(&format!("export {export}")), "missing export {export}:\n{world}");
    }
    for line in world.lines().filter(|l| l.trim_start().starts_with("import ")) {
        assert!(!line.contains("wasi:sockets") && !line.contains("wasi:http"), "the guest must not import network access: {line}");
    }
}
