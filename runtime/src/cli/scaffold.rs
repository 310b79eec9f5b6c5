//! `sluicegate new NAME --lang rust|python|js [--world batch|text]`: a working interceptor project, from templates
//! (`runtime/templates/`) and the SDKs and WIT contract of this repository, embedded at build
//! time so the binary alone can create a project.

use anyhow::{Context as _, bail, ensure};
use std::path::{Path, PathBuf};

/// The languages `new` can scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
    Js,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        })
    }
}

/// The world a new project implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum World {
    /// `batch-interceptor`: every event of a batch, to keep, drop, rewrite or insert.
    Batch,
    /// `text-interceptor`: a guard over the text a model streams, found and decoded by the host.
    Text,
}

impl World {
    fn wit_name(self) -> &'static str {
        match self {
            World::Batch => "batch-interceptor",
            World::Text => "text-interceptor",
        }
    }
}

const WIT: &str = include_str!("../../../wit/interceptor.wit");

/// The author's file for `lang` in `world`, and where it goes.
fn source(lang: Lang, world: World) -> (&'static str, &'static str) {
    match (lang, world) {
        (Lang::Rust, World::Batch) => ("src/lib.rs", include_str!("../../templates/rust/lib.rs")),
        (Lang::Rust, World::Text) => ("src/lib.rs", include_str!("../../templates/rust/lib_text.rs")),
        (Lang::Python, World::Batch) => ("app.py", include_str!("../../templates/python/app.py")),
        (Lang::Python, World::Text) => ("app.py", include_str!("../../templates/python/app_text.py")),
        (Lang::Js, World::Batch) => ("interceptor.js", include_str!("../../templates/js/interceptor.js")),
        (Lang::Js, World::Text) => ("interceptor.js", include_str!("../../templates/js/interceptor_text.js")),
    }
}

/// (path in the project, content); `{{name}}`, `{{crate}}`, `{{world}}` and `{{entry}}` are
/// filled in.
fn files(lang: Lang, world: World) -> Vec<(&'static str, &'static str)> {
    let mut files = vec![source(lang, world)];
    files.extend(common_files(lang));
    files
}

fn common_files(lang: Lang) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", include_str!("../../templates/rust/Cargo.toml")),
            (".cargo/config.toml", include_str!("../../templates/rust/config.toml")),
            ("README.md", include_str!("../../templates/rust/README.md")),
            (".gitignore", include_str!("../../templates/rust/gitignore")),
            ("sluicegate-guest/Cargo.toml", include_str!("../../templates/rust/sdk-Cargo.toml")),
            ("sluicegate-guest/wit/interceptor.wit", WIT),
            ("sluicegate-guest/src/lib.rs", include_str!("../../../guest-examples/sdk/src/lib.rs")),
            ("sluicegate-guest/src/abi.rs", include_str!("../../../guest-examples/sdk/src/abi.rs")),
            ("sluicegate-guest/src/batch.rs", include_str!("../../../guest-examples/sdk/src/batch.rs")),
            ("sluicegate-guest/src/verdict.rs", include_str!("../../../guest-examples/sdk/src/verdict.rs")),
            ("sluicegate-guest/src/guest.rs", include_str!("../../../guest-examples/sdk/src/guest.rs")),
            ("sluicegate-guest/src/json.rs", include_str!("../../../guest-examples/sdk/src/json.rs")),
            ("sluicegate-guest/src/text.rs", include_str!("../../../guest-examples/sdk/src/text.rs")),
            ("sluicegate-guest/src/store.rs", include_str!("../../../guest-examples/sdk/src/store.rs")),
            ("sluicegate-guest/src/count.rs", include_str!("../../../guest-examples/sdk/src/count.rs")),
        ],
        Lang::Python => vec![
            ("build.sh", include_str!("../../templates/python/build.sh")),
            ("README.md", include_str!("../../templates/python/README.md")),
            (".gitignore", include_str!("../../templates/python/gitignore")),
            ("requirements.txt", include_str!("../../../guest-examples/python/requirements.txt")),
            ("sluicegate_guest.py", include_str!("../../../guest-examples/python/sdk/sluicegate_guest.py")),
            ("batch.py", include_str!("../../../guest-examples/python/sdk/batch.py")),
            ("text.py", include_str!("../../../guest-examples/python/sdk/text.py")),
            ("sluicegate_text.py", include_str!("../../../guest-examples/python/sdk/sluicegate_text.py")),
            ("wit/interceptor.wit", WIT),
        ],
        Lang::Js => vec![
            ("build.sh", include_str!("../../templates/js/build.sh")),
            ("README.md", include_str!("../../templates/js/README.md")),
            (".gitignore", include_str!("../../templates/js/gitignore")),
            ("package.json", include_str!("../../templates/js/package.json")),
            ("package-lock.json", include_str!("../../../guest-examples/js/package-lock.json")),
            (".npmrc", include_str!("../../../guest-examples/js/.npmrc")),
            ("sluicegate-guest.js", include_str!("../../../guest-examples/js/sdk/sluicegate-guest.js")),
            ("sluicegate-text.js", include_str!("../../../guest-examples/js/sdk/sluicegate-text.js")),
            ("wit/interceptor.wit", WIT),
        ],
    }
}

/// The component a built project produces, relative to the project.
pub(crate) fn artifact(name: &str, lang: Lang) -> PathBuf {
    match lang {
        Lang::Rust => PathBuf::from(format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_"))),
        Lang::Python | Lang::Js => PathBuf::from(format!("{name}.wasm")),
    }
}

/// The command that builds a project, run in its directory.
pub(crate) fn build_command(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "cargo build --release",
        Lang::Python | Lang::Js => "./build.sh",
    }
}

/// Creates project `name` in `dir` (which must not exist yet) and returns its files' paths.
pub(crate) fn create(dir: &Path, name: &str, lang: Lang, world: World) -> anyhow::Result<Vec<PathBuf>> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ensure!(valid, "`{name}` is not a usable name: use lower-case letters, digits and `-`, starting with a letter");
    if dir.exists() {
        bail!("{} already exists; choose another name or --dir", dir.display());
    }
    let mut written = Vec::new();
    // componentize-py starts from the author's `app` in the batch world, and from the SDK's glue
    // (which imports `app`) in the text world.
    let entry = if world == World::Text { "text" } else { "app" };
    for (path, template) in files(lang, world) {
        let mut content = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{world}}", world.wit_name())
            .replace("{{entry}}", entry);
        if path == "package-lock.json" {
            // The examples' lockfile: the same toolchain, under the examples' package name.
            content = content.replace("sluicegate-js-examples", name);
        }
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))?;
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_template_carries_every_file_of_the_sdk() {
        let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/sdk/src");
        let carried: Vec<&str> = files(Lang::Rust, World::Text).into_iter().map(|(path, _)| path).collect();
        for entry in std::fs::read_dir(sdk).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = format!("sluicegate-guest/src/{name}");
            assert!(carried.contains(&path.as_str()), "`sluicegate new` leaves out the SDK's {name}");
        }
    }
}
