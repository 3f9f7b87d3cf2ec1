//! Adding tether's runtime handler to containerd's `config.toml`, and taking it out again.
//!
//! Pure text in, text out: the file system is `install/mod.rs`'s. Edits go through
//! `toml_edit`, so everything the installer did not add keeps its bytes: comments, order,
//! quoting, blank lines.
//!
//! Where the handler goes depends on the config's `version`: 2 (containerd 1.6/1.7, also read
//! by 2.x after migration) keeps CRI runtimes under `plugins."io.containerd.grpc.v1.cri"`,
//! 3 (containerd 2.x) under `plugins."io.containerd.cri.v1.runtime"`. A file without `version`
//! is version 1 to containerd, whose plugin names differ again: it is refused unless it is
//! empty (then the caller picks 2 or 3 from the installed containerd).

use std::fmt;

use serde::{Deserialize, Serialize};
use toml_edit::{value, DocumentMut, Item, Table};

/// The runtime type containerd maps to the binary `containerd-shim-tether-v2`.
pub const RUNTIME_TYPE: &str = "io.containerd.tether.v2";
/// The Go runc shim, declared again when the installer creates the runtimes table.
const RUNC_TYPE: &str = "io.containerd.runc.v2";
/// The comment above the handler's table, so a reader of the file knows who put it there.
pub const MARKER: &str =
    "# Added by `tether-install install`; `tether-install uninstall` removes it.\n";

/// A containerd config version the installer edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schema {
    /// `version = 2`: containerd 1.6 and 1.7 (2.x migrates it when loading).
    V2,
    /// `version = 3`: containerd 2.0 to 2.3.
    V3,
    /// `version = 4`: containerd 2.4's default; the CRI runtime table is where version 3 has it.
    V4,
}

impl Schema {
    /// The CRI plugin that holds `containerd.runtimes` in this version.
    pub fn cri_plugin(self) -> &'static str {
        match self {
            Schema::V2 => "io.containerd.grpc.v1.cri",
            Schema::V3 | Schema::V4 => "io.containerd.cri.v1.runtime",
        }
    }

    fn number(self) -> i64 {
        match self {
            Schema::V2 => 2,
            Schema::V3 => 3,
            Schema::V4 => 4,
        }
    }
}

/// Why a config was refused. The file is left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Not TOML: where the parser stopped (1-based) and why.
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
    /// A `version` the installer does not know where to put the handler for.
    Version(String),
    /// A key on the handler's path is not a table (e.g. `runtimes = "x"`).
    NotATable(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Parse {
                line,
                column,
                message,
            } => write!(
                f,
                "TOML parse error at line {line}, column {column}: {message}"
            ),
            ConfigError::Version(v) => write!(
                f,
                "config version {v} is not supported (want 2, 3 or 4; a file without `version` is \
                 version 1: run `containerd config migrate` first)"
            ),
            ConfigError::NotATable(path) => write!(f, "{path} is not a table"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// What `add` put into the file, so that `remove` takes out exactly that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    pub schema: Schema,
    /// The handler's name (its table under `runtimes`, and the RuntimeClass's `handler`).
    pub handler: String,
    /// `version = N` was written into an empty file.
    pub version: bool,
    /// How many tables of the path `plugins`, `<cri plugin>`, `containerd`, `runtimes` were
    /// created (the last ones): removed again when they are left empty.
    pub created_tables: usize,
    /// A `runc` runtime was declared because the runtimes table was created.
    pub runc: bool,
    /// `default_runtime_name = "runc"` was set with it.
    pub default_runtime_name: bool,
}

/// The result of [`add`].
#[derive(Debug)]
pub enum Edit {
    /// The new text and what was added.
    Changed(String, Added),
    /// A runtime of that name is already declared: nothing to do.
    AlreadyPresent(Schema),
}

/// Parses `text`, with the parser's position as line and column.
pub fn parse(text: &str) -> Result<DocumentMut, ConfigError> {
    text.parse::<DocumentMut>().map_err(|e| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        ConfigError::Parse {
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

/// The config's version; `None` for a file with nothing in it (only comments or blank).
fn schema(doc: &DocumentMut) -> Result<Option<Schema>, ConfigError> {
    match doc.get("version") {
        Some(v) => match v.as_integer() {
            Some(2) => Ok(Some(Schema::V2)),
            Some(3) => Ok(Some(Schema::V3)),
            Some(4) => Ok(Some(Schema::V4)),
            _ => Err(ConfigError::Version(v.to_string().trim().to_string())),
        },
        None if doc.is_empty() => Ok(None),
        None => Err(ConfigError::Version("1".into())),
    }
}

/// The four table names from the document root to the runtimes table.
fn runtimes_path(schema: Schema) -> [&'static str; 4] {
    ["plugins", schema.cri_plugin(), "containerd", "runtimes"]
}

/// Adds runtime `handler` (type `io.containerd.tether.v2`, with `ConfigPath = options_file`
/// when given) to the CRI plugin's runtimes. `fresh` is the version to write into an empty
/// file. Declares `runc` too when the runtimes table is created: a declared runtime table
/// replaces containerd's built-in one, which holds `runc`.
pub fn add(
    text: &str,
    handler: &str,
    options_file: Option<&str>,
    fresh: Schema,
) -> Result<Edit, ConfigError> {
    let mut doc = parse(text)?;
    let (schema, version) = match schema(&doc)? {
        Some(s) => (s, false),
        None => (fresh, true),
    };
    if version {
        doc.insert("version", value(schema.number()));
    }
    let mut table = doc.as_table_mut();
    let mut created_tables = 0;
    let mut shown = String::new();
    let path = runtimes_path(schema);
    for (depth, name) in path.iter().enumerate() {
        shown += if depth == 0 { "" } else { "." };
        shown += name;
        if !table.contains_key(name) {
            let mut t = Table::new();
            // Headers only for tables that hold keys: `[plugins]` alone would be noise.
            t.set_implicit(true);
            table.insert(name, Item::Table(t));
            if created_tables == 0 {
                created_tables = path.len() - depth;
            }
        }
        table = table
            .get_mut(name)
            .and_then(Item::as_table_mut)
            .ok_or_else(|| ConfigError::NotATable(shown.clone()))?;
    }
    if table.contains_key(handler) {
        return Ok(Edit::AlreadyPresent(schema));
    }
    let runc = table.is_empty();
    if runc {
        let mut t = Table::new();
        t.insert("runtime_type", value(RUNC_TYPE));
        table.insert("runc", Item::Table(t));
    }
    let mut t = Table::new();
    t.decor_mut().set_prefix(format!("\n{MARKER}"));
    t.insert("runtime_type", value(RUNTIME_TYPE));
    if let Some(file) = options_file {
        let mut o = Table::new();
        o.insert("ConfigPath", value(file));
        t.insert("options", Item::Table(o));
    }
    table.insert(handler, Item::Table(t));
    let mut default_runtime_name = false;
    if runc {
        let containerd = containerd_table(&mut doc, schema).expect("created above");
        if !containerd.contains_key("default_runtime_name") {
            containerd.insert("default_runtime_name", value("runc"));
            containerd.set_implicit(false);
            default_runtime_name = true;
        }
    }
    let added = Added {
        schema,
        handler: handler.to_string(),
        version,
        created_tables,
        runc,
        default_runtime_name,
    };
    Ok(Edit::Changed(doc.to_string(), added))
}

/// `plugins.<cri>.containerd`, if it is there and a table.
fn containerd_table(doc: &mut DocumentMut, schema: Schema) -> Option<&mut Table> {
    doc.get_mut("plugins")?
        .get_mut(schema.cri_plugin())?
        .get_mut("containerd")?
        .as_table_mut()
}

/// Takes out of `text` what [`add`] added, keeping everything else (the user's later edits).
/// A handler table the user removed already is no error. `runc` and `default_runtime_name`
/// go only if still as the installer wrote them; created tables only if left empty.
pub fn remove(text: &str, added: &Added) -> Result<String, ConfigError> {
    let mut doc = parse(text)?;
    let path = runtimes_path(added.schema);
    if let Some(containerd) = containerd_table(&mut doc, added.schema) {
        if let Some(runtimes) = containerd.get_mut("runtimes").and_then(Item::as_table_mut) {
            runtimes.remove(&added.handler);
            let runc_as_added = runtimes
                .get("runc")
                .and_then(Item::as_table)
                .is_some_and(|t| {
                    t.len() == 1 && t.get("runtime_type").and_then(Item::as_str) == Some(RUNC_TYPE)
                });
            if added.runc && runc_as_added && runtimes.len() == 1 {
                runtimes.remove("runc");
            }
        }
        let runtimes_gone = containerd
            .get("runtimes")
            .and_then(Item::as_table)
            .is_none_or(Table::is_empty);
        if added.default_runtime_name
            && runtimes_gone
            && containerd
                .get("default_runtime_name")
                .and_then(Item::as_str)
                == Some("runc")
        {
            containerd.remove("default_runtime_name");
        }
    }
    // The created tables, innermost first, while empty.
    for depth in (path.len() - added.created_tables..path.len()).rev() {
        let mut parent = Some(doc.as_table_mut());
        for name in &path[..depth] {
            parent = parent
                .and_then(|t| t.get_mut(name))
                .and_then(Item::as_table_mut);
        }
        let Some(parent) = parent else { break };
        let empty = parent
            .get(path[depth])
            .and_then(Item::as_table)
            .is_some_and(Table::is_empty);
        if !empty {
            break;
        }
        parent.remove(path[depth]);
    }
    if added.version && doc.len() == 1 && doc.contains_key("version") {
        doc.remove("version");
    }
    Ok(doc.to_string())
}

/// Whether `text` declares runtime `handler` with tether's runtime type.
pub fn has_handler(text: &str, handler: &str) -> Result<Option<Schema>, ConfigError> {
    let mut doc = parse(text)?;
    let Some(schema) = schema(&doc)? else {
        return Ok(None);
    };
    let found = containerd_table(&mut doc, schema)
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(handler))
        .is_some();
    Ok(found.then_some(schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_V2: &str = r#"# my node's containerd
version = 2
root = "/var/lib/containerd"   # keep

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "crun"
      # crun, our own
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
          BinaryName = "/usr/bin/crun"

[metrics]
  address = "127.0.0.1:1338"
"#;

    fn changed(edit: Edit) -> (String, Added) {
        match edit {
            Edit::Changed(t, a) => (t, a),
            Edit::AlreadyPresent(_) => panic!("nothing added"),
        }
    }

    #[test]
    fn adds_next_to_the_users_runtimes_and_keeps_every_line() {
        let (text, added) = changed(add(USER_V2, "tether", None, Schema::V3).unwrap());
        assert_eq!(added.schema, Schema::V2);
        assert!(!added.runc && !added.default_runtime_name && added.created_tables == 0);
        // Every original line is still there, in order.
        let mut rest = text.as_str();
        for line in USER_V2.lines() {
            let at = rest
                .find(line)
                .unwrap_or_else(|| panic!("lost {line:?}:\n{text}"));
            rest = &rest[at + line.len()..];
        }
        assert!(text.contains(&format!(
            "{MARKER}[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.tether]\n\
             runtime_type = \"io.containerd.tether.v2\"\n"
        )));
        assert_eq!(
            has_handler(&text, "tether").unwrap(),
            Some(Schema::V2),
            "{text}"
        );
        assert_eq!(remove(&text, &added).unwrap(), USER_V2);
    }

    #[test]
    fn a_config_without_runtimes_gets_runc_too() {
        let text = "version = 3\n\n[grpc]\n  address = \"/x.sock\"\n";
        let (out, added) = changed(add(text, "tether", Some("/etc/t.toml"), Schema::V2).unwrap());
        assert_eq!(added.schema, Schema::V3);
        assert!(added.runc && added.default_runtime_name);
        assert_eq!(added.created_tables, 4);
        let doc = parse(&out).unwrap();
        let containerd = &doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"];
        assert_eq!(containerd["default_runtime_name"].as_str(), Some("runc"));
        assert_eq!(
            containerd["runtimes"]["runc"]["runtime_type"].as_str(),
            Some(RUNC_TYPE)
        );
        assert_eq!(
            containerd["runtimes"]["tether"]["options"]["ConfigPath"].as_str(),
            Some("/etc/t.toml")
        );
        assert_eq!(remove(&out, &added).unwrap(), text);
    }

    #[test]
    fn an_empty_file_gets_the_version_it_is_given() {
        let (out, added) = changed(add("", "tether", None, Schema::V3).unwrap());
        assert!(added.version);
        assert!(out.starts_with("version = 3\n"), "{out}");
        assert_eq!(remove(&out, &added).unwrap(), "");
    }

    #[test]
    fn later_user_edits_survive_remove() {
        let (out, added) = changed(add(USER_V2, "tether", None, Schema::V2).unwrap());
        let edited = out.replace("127.0.0.1:1338", "127.0.0.1:9999");
        let back = remove(&edited, &added).unwrap();
        assert_eq!(back, USER_V2.replace("127.0.0.1:1338", "127.0.0.1:9999"));
    }

    #[test]
    fn present_handler_is_left_alone() {
        let (out, _) = changed(add(USER_V2, "tether", None, Schema::V2).unwrap());
        assert!(matches!(
            add(&out, "tether", None, Schema::V2).unwrap(),
            Edit::AlreadyPresent(Schema::V2)
        ));
    }

    #[test]
    fn refusals_say_where_and_why() {
        let bad = "version = 2\n[plugins\nx = 1\n";
        match add(bad, "tether", None, Schema::V2).unwrap_err() {
            ConfigError::Parse { line, column, .. } => assert_eq!((line, column), (2, 9)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            add("root = \"/x\"\n", "tether", None, Schema::V2).unwrap_err(),
            ConfigError::Version("1".into())
        );
        assert_eq!(
            add("version = 5\n", "tether", None, Schema::V2).unwrap_err(),
            ConfigError::Version("5".into())
        );
        let not_table =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = 1\n";
        assert!(matches!(
            add(not_table, "tether", None, Schema::V2).unwrap_err(),
            ConfigError::NotATable(_)
        ));
    }
}
