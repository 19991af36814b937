//! Embeds the viewer (`web/`) and noVNC's modules (`web/node_modules/@novnc/novnc`, installed
//! by `npm ci --prefix web`) into the binary, so `hpcdesk serve` finds them whatever its
//! working directory. Without the npm install the build still succeeds, warns, and the
//! viewer page tells the user that noVNC is missing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let web = manifest.join("../../web");
    let novnc = web.join("node_modules/@novnc/novnc");
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for name in [
        "index.html",
        "portal.js",
        "portal.css",
        "vnc.html",
        "viewer.js",
        "viewer.css",
    ] {
        let p = web.join(name);
        println!("cargo:rerun-if-changed={}", p.display());
        files.push((format!("/{name}"), p));
    }
    println!(
        "cargo:rerun-if-changed={}",
        novnc.join("package.json").display()
    );
    let mut found = Vec::new();
    for sub in ["core", "vendor"] {
        walk(&novnc.join(sub), &mut found);
    }
    for p in &found {
        let rel = p.strip_prefix(&novnc).expect("under novnc");
        files.push((format!("/novnc/{}", rel.display()), p.clone()));
    }
    let novnc_ok = !found.is_empty();
    if !novnc_ok {
        println!(
            "cargo:warning=noVNC is not installed in web/node_modules; run `npm ci --prefix web` \
             (ci/install.sh does) or the viewer page cannot connect"
        );
    }
    let mut code = String::from("/// Files served by `hpcdesk serve`: (URL path, contents).\n");
    code.push_str("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (url, path) in &files {
        let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
        writeln!(
            code,
            "    ({url:?}, include_bytes!({:?})),",
            abs.display().to_string()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    writeln!(code, "/// Whether noVNC's modules were found at build time.\npub const NOVNC_EMBEDDED: bool = {novnc_ok};").expect("write to string");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("assets.rs");
    std::fs::write(out, code).expect("write assets.rs");
}
