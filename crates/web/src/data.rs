//! The data page's endpoints: what the store holds (as `tradebox data info
//! --json` tells it) and the import of an uploaded file. An upload is
//! written to a private temporary folder under its own (sanitised) name;
//! [`tradebox_data::import_and_publish`] then imports it in one transaction
//! and publishes a new snapshot version when it added anything, as for
//! `tradebox data import`; the sandbox pool follows `snapshot/current` by
//! itself. Each import is audited (action `import`).

use axum::extract::{RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};
use tradebox_core::audit::{Action, AuditEntry, Outcome};
use tradebox_data::import::{self, CsvOptions};
use tradebox_data::progress::NoProgress;
use tradebox_data::Home;

use crate::api::{blocking, source};
use crate::error::ApiError;
use crate::guard::Via;
use crate::json::{body_bytes, Params};
use crate::AppState;

/// `GET /api/v1/data`.
pub async fn info(State(state): State<AppState>) -> Result<Response, ApiError> {
    let home = state.home.clone();
    let body = blocking(move || data_info(&home)).await?;
    Ok(Json(body).into_response())
}

fn data_info(home: &Home) -> Result<Value, ApiError> {
    Ok(tradebox_data::info::info(home)?)
}

/// A file name safe to create: the last component, other characters than
/// letters, digits, `.`, `-` and `_` replaced by `_`.
fn safe_file_name(name: &str) -> Result<String, ApiError> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .take(120)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        return Err(ApiError::BadRequest {
            message: "name: give the uploaded file's name, e.g. ?name=trades.csv".into(),
            field: Some("name".into()),
        });
    }
    Ok(cleaned)
}

/// `POST /api/v1/data/import?name=FILE[&exchange=X][&account=Y]`, the
/// file's bytes as the body.
pub async fn import(
    State(state): State<AppState>,
    Extension(via): Extension<Via>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Result<Response, ApiError> {
    let params = Params::new(query);
    let name = safe_file_name(&params.get("name").unwrap_or_default())?;
    let options = CsvOptions {
        exchange: params.get("exchange"),
        account: params.get("account"),
    };
    let bytes = body_bytes(req, &()).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(format!("{name}: the file is empty")));
    }
    // One import at a time from this server (the store also locks).
    let _one = state.import_lock.lock().await;
    let home = state.home.clone();
    let pipeline = state.pipeline.clone();
    let user = state.options.user.clone();
    let body = blocking(move || {
        let mut entry = AuditEntry::new(user, source(via), Action::Import, Outcome::Ok);
        let result = import_file(&home, &name, &bytes, &options);
        entry.detail = Some(match &result {
            Ok((_, detail)) => detail.clone(),
            Err(e) if e.to_string().starts_with(name.as_str()) => e.to_string(),
            Err(e) => format!("{name}: {e}"),
        });
        if result.is_err() {
            entry.outcome = Outcome::Error;
        }
        if let Err(e) = pipeline.audit().record(&entry) {
            tracing::error!("audit trail: {e}");
        }
        result.map(|(body, _)| body)
    })
    .await?;
    Ok(Json(body).into_response())
}

/// Imports one uploaded file; the JSON answer and the audit detail.
fn import_file(
    home: &Home,
    name: &str,
    bytes: &[u8],
    options: &CsvOptions,
) -> Result<(Value, String), ApiError> {
    let dir = home
        .upload_folder()
        .map_err(|e| ApiError::Internal(format!("cannot make a temporary folder: {e}")))?;
    let path = dir.path().join(name);
    std::fs::write(&path, bytes)
        .map_err(|e| ApiError::Internal(format!("cannot keep the upload: {e}")))?;
    let renamed = |e: tradebox_data::Error| -> ApiError {
        let shown = path.display().to_string();
        match ApiError::from(e) {
            ApiError::BadRequest { message, field } => ApiError::BadRequest {
                message: message.replace(&shown, name),
                field,
            },
            ApiError::Conflict(m) => ApiError::Conflict(m.replace(&shown, name)),
            ApiError::Internal(m) => ApiError::Internal(m.replace(&shown, name)),
            other => other,
        }
    };
    let imported =
        tradebox_data::import_and_publish(home, std::slice::from_ref(&path), options, &NoProgress)
            .map_err(renamed)?;
    let (manifest, published) = (&imported.manifest, imported.published);
    let Some(report) = imported.imports.first() else {
        return Err(ApiError::Internal("the importer reported nothing".into()));
    };
    let unit = match report.kind {
        import::SourceKind::Sqlite | import::SourceKind::Csv => "trades",
        _ => "snapshots",
    };
    let detail = format!(
        "{name} ({}): {} {unit} read, {} new; {}",
        report.kind.describe(),
        report.read,
        report.added,
        if published {
            format!("snapshot v{} published", manifest.version)
        } else {
            format!("snapshot v{} stays current", manifest.version)
        }
    );
    let body = json!({
        "name": name,
        "kind": report.kind,
        "description": report.kind.describe(),
        "unit": unit,
        "read": report.read,
        "added": report.added,
        "published": published,
        "snapshot": tradebox_data::info::snapshot_json(&imported.snapshot_dir, manifest),
        "message": detail,
    });
    Ok((body, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(
            safe_file_name("trades.csv").ok().as_deref(),
            Some("trades.csv")
        );
        assert_eq!(
            safe_file_name("../../etc/passwd").ok().as_deref(),
            Some("passwd")
        );
        assert_eq!(
            safe_file_name("C:\\x\\my file;.json").ok().as_deref(),
            Some("my_file_.json")
        );
        assert_eq!(safe_file_name("..").ok(), None);
        assert_eq!(safe_file_name("").ok(), None);
    }
}
