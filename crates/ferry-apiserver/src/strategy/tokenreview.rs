//! TokenReviews (`authentication.k8s.io/v1`): create-only, never stored. The answer is the
//! request with `status.authenticated`, `status.user` and `status.audiences` filled in by
//! the server's token authenticators (static tokens, service-account JWTs), as
//! kube-apiserver answers a webhook token authenticator or an auth proxy.

use serde_json::{Value, json};

use super::{Strategy, name_column};
use crate::auth::Authenticator;
use crate::error::{ApiError, ApiResult};
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;

/// The API group of TokenReview.
pub const GROUP: &str = "authentication.k8s.io";

/// The strategy of TokenReviews.
pub struct TokenReviews;

impl Strategy for TokenReviews {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            GROUP,
            "v1",
            "tokenreviews",
            "TokenReview",
            false,
            &[],
        ))
    }

    fn decode(&self, _info: &ResourceInfo, _object: &mut Value) -> ApiResult<Vec<String>> {
        Ok(Vec::new())
    }

    fn create_only(&self) -> bool {
        true
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column()])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(o))]
    }
}

/// Whether `info` is TokenReview.
pub fn is_token_review(info: &ResourceInfo) -> bool {
    !info.custom && info.group == GROUP && info.plural == "tokenreviews"
}

/// Answers a `POST` of a TokenReview: the review with its `status`.
pub fn create(authn: &Authenticator, service: &Service, mut review: Value) -> ApiResult<Value> {
    if !review.is_object() {
        return Err(ApiError::bad_request("the TokenReview must be an object"));
    }
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::invalid(
            GROUP,
            "TokenReview",
            "",
            vec![crate::error::FieldCause::required("spec.token")],
        ));
    }
    let audiences: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let status = match authn.authenticate_token(service, token, &audiences) {
        Ok((user, audiences)) => json!({
            "authenticated": true,
            "user": user.to_json(),
            "audiences": audiences,
        }),
        Err(reason) => {
            tracing::debug!(%reason, "TokenReview: token refused");
            json!({"user": {}, "error": format!("[invalid bearer token, {reason}]")})
        }
    };
    review["status"] = status;
    review["apiVersion"] = json!(format!("{GROUP}/v1"));
    review["kind"] = json!("TokenReview");
    if review.get("metadata").is_none_or(|m| !m.is_object()) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(review)
}
