//! Rendering a template in memory, with no access to the host.
//!
//! Templates from `--template-dir` are untrusted: rendering only ever sees the context
//! built here (the app, the service, `--set` values) and produces bytes in memory. Tera's
//! `get_env` is replaced by a function that refuses; the other built-in functions
//! (`range`, `throw`) read nothing, and each text is its own one-template instance, so
//! `include`, `import` and `extends` find nothing to load.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::templates::Template;
use super::ScaffoldError;

/// Tera's functions that read the host, refused by name.
const HOST_FUNCTIONS: &[&str] = &["get_env"];

/// One rendered file: where it goes (relative, normal components only) and its bytes.
#[derive(Debug, Clone)]
pub struct RenderedFile {
    pub output: PathBuf,
    pub contents: Vec<u8>,
}

/// Renders (or copies) every file of `template`, in memory.
pub fn render_files(
    template: &Template,
    context: &tera::Context,
) -> Result<Vec<RenderedFile>, ScaffoldError> {
    template
        .files
        .iter()
        .map(|file| {
            let contents = if file.render {
                render_text(template, &file.source, &file.contents, context)?.into_bytes()
            } else {
                file.contents.clone()
            };
            Ok(RenderedFile {
                output: file.output.clone(),
                contents,
            })
        })
        .collect()
}

/// Renders one text of `template` (`source` names it in errors).
pub fn render_text(
    template: &Template,
    source: &str,
    contents: &[u8],
    context: &tera::Context,
) -> Result<String, ScaffoldError> {
    let fail = |message: String| ScaffoldError::Template {
        template: template.name.clone(),
        file: source.to_string(),
        message,
    };
    let text = std::str::from_utf8(contents)
        .map_err(|_| fail("not UTF-8 text; drop the .tera suffix to copy it as is".into()))?;
    sandboxed_render(text, context).map_err(|e| {
        // tera keeps the useful part in the error's source chain; the wrapper's name for
        // the text says nothing the template and file above do not.
        let unnamed = |text: String| {
            text.replace(" while rendering '__tera_one_off'", "")
                .replace(" '__tera_one_off'", "")
        };
        let mut message = unnamed(e.to_string());
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = unnamed(c.to_string());
            // A syntax error is a multi-line snippet: start it on its own line.
            message.push_str(if text.contains('\n') { "\n" } else { ": " });
            message.push_str(&text);
            cause = c.source();
        }
        fail(message)
    })
}

/// `Tera::one_off` without the functions that read the host.
fn sandboxed_render(text: &str, context: &tera::Context) -> tera::Result<String> {
    let mut tera = tera::Tera::default();
    for &name in HOST_FUNCTIONS {
        tera.register_function(name, move |_: &_| -> tera::Result<tera::Value> {
            Err(tera::Error::msg(format!(
                "`{name}` is not available: templates cannot read the environment or files; pass values with --set KEY=VALUE and read them as vars.KEY"
            )))
        });
    }
    tera.render_str(text, context)
}

/// The base context every template sees.
pub fn base_context(app: &str, vars: &BTreeMap<String, String>) -> tera::Context {
    let mut context = tera::Context::new();
    context.insert("app", app);
    context.insert("vars", vars);
    context.insert("dronectl_version", env!("CARGO_PKG_VERSION"));
    context
}

#[cfg(test)]
mod tests {
    use super::super::templates::{TemplateKind, TemplateMeta};
    use super::*;

    fn template() -> Template {
        Template {
            name: "t".into(),
            meta: TemplateMeta {
                description: String::new(),
                kind: TemplateKind::Service,
                default_port: None,
                shared: false,
            },
            files: Vec::new(),
            manifest_entry: None,
        }
    }

    fn render(text: &str) -> Result<String, String> {
        let context = base_context("shop", &BTreeMap::new());
        render_text(&template(), "files/x.tera", text.as_bytes(), &context)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn renders_the_context() {
        assert_eq!(
            render("{{ app }} {% for i in range(end=2) %}{{ i }}{% endfor %}").unwrap(),
            "shop 01"
        );
    }

    #[test]
    fn errors_name_the_file_not_tera_internals() {
        let err = render("{% if %}").unwrap_err();
        assert!(
            err.starts_with("template `t`, file files/x.tera: Failed to parse\n")
                && err.contains("1:7"),
            "{err}"
        );
        let err = render("{{ nope }}").unwrap_err();
        assert_eq!(
            err,
            "template `t`, file files/x.tera: Failed to render: Variable `nope` not found in context"
        );
    }

    #[test]
    fn cannot_read_the_environment() {
        std::env::var_os("PATH").expect("PATH is set in tests");
        for text in [
            "{{ get_env(name='PATH') }}",
            "{{ get_env(name='PATH', default='x') }}",
            "{% set p = get_env(name='PATH') %}{{ p }}",
        ] {
            let err = render(text).unwrap_err();
            assert!(
                err.contains("template `t`, file files/x.tera")
                    && err.contains("`get_env` is not available"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn cannot_load_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "top secret").unwrap();
        let secret = secret.display();
        for text in [
            format!("{{% include \"{secret}\" %}}"),
            format!("{{% import \"{secret}\" as m %}}"),
            format!("{{% extends \"{secret}\" %}}"),
            "{% include \"/etc/passwd\" %}".to_string(),
        ] {
            let err = render(&text).unwrap_err();
            assert!(!err.contains("top secret"), "{text}: {err}");
        }
    }
}
