//! The REST surface: routes, request parsing, content negotiation and responses.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::patch::PatchKind;
use crate::registry::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::service::{DeleteOptions, FieldValidation, ListOptions, Service, WriteOptions, Written};
use crate::table::{self, IncludeObject};
use crate::{discovery, logs, openapi, streaming, watch};

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// The API semantics.
    pub service: Arc<Service>,
    /// The address clients reach the server at (`host:port`).
    pub advertise: String,
    /// Whether the server is ready (store loaded, bootstrap objects created).
    pub ready: std::sync::atomic::AtomicBool,
    /// The limits that protect the server.
    pub limits: crate::edge::Limits,
    /// Signs service-account tokens (`serviceaccounts/<name>/token`); none: `503`.
    pub tokens: Option<Arc<crate::token::TokenIssuer>>,
    /// Who a request comes from.
    pub authn: crate::auth::Authenticator,
    /// Whether a user may do what a request asks.
    pub authz: Arc<dyn crate::authz::Authorizer>,
    /// The insecure benchmark transport ([`crate::Transport::InsecurePlainHttpWithoutAuthentication`]):
    /// requests without credentials are served as the admin (`system:masters`). Never set
    /// for a cluster.
    pub insecure_everyone_is_admin: bool,
    /// The client of node agents (logs, exec/attach/port-forward, metrics): mutual TLS.
    pub kubelet: crate::kubelet::KubeletClient,
}

type Shared = Arc<AppState>;

/// The router of the whole API.
pub fn router(state: Shared) -> Router {
    let limits = state.limits.clone();
    let routes = Router::new()
        .route("/version", get(|| async { Json(discovery::version()) }))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
        .route("/api", get(core_versions))
        .route("/apis", get(api_groups))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_root))
        .route("/openapi/v3/{*path}", get(openapi_doc))
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            get(streaming::exec).post(streaming::exec),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/attach",
            get(streaming::attach).post(streaming::attach),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
            get(streaming::portforward).post(streaming::portforward),
        )
        .fallback(dispatch)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate_and_authorize,
        ))
        .with_state(state);
    crate::edge::layer(routes, &limits)
}

/// Paths anonymous requests may reach (as Kubernetes' `system:public-info-viewer`).
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

/// Authentication (`401`), then authorization (`403`): the user goes into the request's
/// extensions for the handlers and admission.
async fn authenticate_and_authorize(
    State(state): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::auth::UserInfo;
    let (mut parts, body) = request.into_parts();
    let user = match state.authn.authenticate(&state.service, &parts) {
        Ok(Some(user)) => user,
        Ok(None) if state.insecure_everyone_is_admin => {
            UserInfo::new(crate::auth::users::ADMIN, &[crate::auth::groups::MASTERS])
        }
        Ok(None) if PUBLIC_PATHS.contains(&parts.uri.path()) => UserInfo::anonymous(),
        Ok(None) => return crate::auth::unauthorized().into_response(),
        Err(e) => return e.into_response(),
    };
    let attributes = crate::authz::Attributes::of_request(
        user.clone(),
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
    );
    let allowed = user.in_group(crate::auth::groups::MASTERS)
        || (PUBLIC_PATHS.contains(&parts.uri.path()) && parts.method == Method::GET);
    if !allowed {
        match state.authz.authorize(&state.service, &attributes) {
            crate::authz::Decision::Allow(_) => {}
            crate::authz::Decision::Deny(why) | crate::authz::Decision::NoOpinion(why) => {
                return crate::authz::forbidden(&attributes, &why).into_response();
            }
        }
    }
    parts.extensions.insert(Arc::new(user));
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not supported on {}", uri.path()))
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(s): State<Shared>) -> Response {
    if s.ready.load(std::sync::atomic::Ordering::Acquire) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting").into_response()
    }
}

async fn core_versions(State(s): State<Shared>) -> Json<Value> {
    Json(discovery::core_versions(&s.advertise))
}

async fn api_groups(State(s): State<Shared>) -> Json<Value> {
    Json(discovery::groups(&s.service.registry))
}

/// `/openapi/v2`: the definitions of every kind as JSON. A client that asks for protobuf (as
/// client-go does) gets an empty protobuf document ("no client-side schema"); kubectl reads
/// the schemas from OpenAPI v3.
async fn openapi_v2(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let wants_protobuf = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("protobuf"));
    if wants_protobuf {
        // The protobuf encoding of an empty OpenAPI v2 Document is zero bytes.
        return (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            Vec::new(),
        )
            .into_response();
    }
    Json(openapi::v2(&s.service.registry)).into_response()
}

async fn openapi_root(State(s): State<Shared>) -> Json<Value> {
    Json(openapi::root(&s.service.registry))
}

async fn openapi_doc(State(s): State<Shared>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches("/openapi/v3/");
    match openapi::group_version(&s.service.registry, path) {
        Some(doc) => Json(doc).into_response(),
        None => ApiError::no_route(uri.path()).into_response(),
    }
}

/// What a request addresses.
pub struct Target {
    /// The resource.
    pub info: Arc<ResourceInfo>,
    /// The namespace from the path, if any.
    pub namespace: Option<String>,
    /// The object name, if any.
    pub name: Option<String>,
    /// The subresource, if any.
    pub subresource: Option<String>,
}

enum Route {
    Discovery(Value),
    Group(Value),
    Resource(Target),
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(high * 16 + low);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(service: &Service, path: &str) -> ApiResult<Route> {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => {
            let groups = service.registry.groups();
            return match groups.get(*group) {
                Some(versions) => Ok(Route::Group(discovery::group(group, versions))),
                None => Err(ApiError::no_route(path)),
            };
        }
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    if rest.is_empty() {
        return discovery::resources(&service.registry, group, version)
            .map(Route::Discovery)
            .ok_or_else(|| ApiError::no_route(path));
    }
    let (namespace, resource, name, sub) = match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] => {
            (None, "namespaces", Some(*ns), Some(*sub))
        }
        ["namespaces", ns, resource, tail @ ..] => {
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(*name), None),
                [name, sub] => (Some(*name), Some(*sub)),
                _ => return Err(ApiError::no_route(path)),
            };
            (Some(*ns), *resource, name, sub)
        }
        [resource] => (None, *resource, None, None),
        [resource, name] => (None, *resource, Some(*name), None),
        [resource, name, sub] => (None, *resource, Some(*name), Some(*sub)),
        _ => return Err(ApiError::no_route(path)),
    };
    let info = service
        .registry
        .get(group, version, resource)
        .ok_or_else(|| ApiError::no_route(path))?;
    if namespace.is_some() && !info.namespaced {
        return Err(ApiError::no_route(path));
    }
    if info.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_route(path));
    }
    if let Some(s) = sub
        && !info.has_subresource(s)
    {
        return Err(ApiError::no_route(path));
    }
    Ok(Route::Resource(Target {
        info,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    }))
}

/// How the client wants objects rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// Plain JSON objects.
    Json,
    /// A `meta.k8s.io` Table (version `v1` or `v1beta1`).
    Table(&'static str),
    /// Only metadata (`PartialObjectMetadata[List]`).
    Metadata,
}

/// Picks the rendering from the Accept header.
pub fn negotiate(headers: &HeaderMap) -> ApiResult<Render> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) else {
        return Ok(Render::Json);
    };
    let mut json_ok = false;
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let kind = parts.next().unwrap_or_default();
        let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        if !matches!(kind, "application/json" | "*/*" | "application/*" | "") {
            continue;
        }
        match (params.get("as"), params.get("g"), params.get("v")) {
            (Some(&"Table"), Some(&"meta.k8s.io"), Some(&"v1")) => return Ok(Render::Table("v1")),
            (Some(&"Table"), Some(&"meta.k8s.io"), Some(&"v1beta1")) => {
                return Ok(Render::Table("v1beta1"));
            }
            (
                Some(&("PartialObjectMetadata" | "PartialObjectMetadataList")),
                Some(&"meta.k8s.io"),
                _,
            ) => {
                return Ok(Render::Metadata);
            }
            (None, _, _) => json_ok = true,
            _ => {}
        }
    }
    if json_ok {
        Ok(Render::Json)
    } else {
        Err(ApiError::not_acceptable(format!(
            "only application/json (optionally as Table or PartialObjectMetadata) can be served, not {accept:?}"
        )))
    }
}

/// Parsed query parameters.
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// A parameter, or "".
    pub fn get(&self, k: &str) -> &str {
        self.0.get(k).map(String::as_str).unwrap_or_default()
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), "true" | "1" | "True")
    }

    /// An integer parameter, if present.
    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            "" => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{k} must be an integer, not {v:?}"))),
        }
    }

    fn list_options(&self) -> ApiResult<ListOptions> {
        let limit = self.int("limit")?.unwrap_or(0);
        if limit < 0 {
            return Err(ApiError::bad_request("limit must not be negative"));
        }
        Ok(ListOptions {
            labels: LabelSelector::parse(self.get("labelSelector"))?,
            fields: FieldSelector::parse(self.get("fieldSelector"))?,
            limit: limit as usize,
            continue_token: Some(self.get("continue").to_string()).filter(|c| !c.is_empty()),
        })
    }

    /// The options of a create, update (`patch: None`) or patch of the given kind.
    fn write_options(
        &self,
        headers: &HeaderMap,
        patch: Option<PatchKind>,
        user: &Option<Arc<crate::auth::UserInfo>>,
    ) -> ApiResult<WriteOptions> {
        let field_manager = self.get("fieldManager");
        let force = match self.get("force") {
            "" => None,
            _ => Some(self.flag("force")),
        };
        crate::fieldmanager::validate_options(
            field_manager,
            patch == Some(PatchKind::Apply),
            force.filter(|_| patch.is_some()),
        )?;
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(WriteOptions {
            dry_run: dry_run(self.get("dryRun"))?,
            field_validation: FieldValidation::parse(self.get("fieldValidation"))?,
            field_manager: crate::fieldmanager::manager_name(field_manager, user_agent),
            force: force.unwrap_or(false),
            user: user.clone(),
        })
    }
}

fn dry_run(v: &str) -> ApiResult<bool> {
    match v {
        "" => Ok(false),
        "All" => Ok(true),
        other => Err(ApiError::bad_request(format!(
            "dryRun must be \"All\" (got {other:?})"
        ))),
    }
}

/// The media types request bodies are read in, as kube-apiserver lists them in its `415`.
const BODY_MEDIA_TYPES: &str =
    "application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Json,
    Yaml,
    Protobuf,
}

/// The format of a body of Content-Type `content_type`. Only the API's own media types are
/// read: `text/plain`, `application/x-www-form-urlencoded` and `multipart/form-data` (what a
/// browser sends cross-site without asking first) and a body without a Content-Type are
/// refused with `415`, never decoded, so a web page cannot write to the API (CSRF).
fn body_format(content_type: Option<&str>) -> ApiResult<BodyFormat> {
    let unknown = || {
        ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: {BODY_MEDIA_TYPES}"
        ))
    };
    let content_type = content_type.ok_or_else(unknown)?;
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(BodyFormat::Yaml)
        }
        "application/vnd.kubernetes.protobuf" | "application/protobuf" => Ok(BodyFormat::Protobuf),
        _ => Err(unknown()),
    }
}

/// Decodes a JSON, YAML or Kubernetes protobuf body (its size was bounded when it was read:
/// [`crate::edge::read_body`]), by its Content-Type, which must be one of the API's (`415`
/// otherwise, a missing one included: see [`body_format`]).
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|c| c.to_str().unwrap_or("(not text)"));
    decode_as(body_format(content_type)?, body)
}

fn decode_as(format: BodyFormat, body: &[u8]) -> ApiResult<Value> {
    match format {
        BodyFormat::Protobuf => crate::protobuf::decode(body).map_err(|e| {
            let message = format!("the protobuf body cannot be read: {e}");
            if e.is_unsupported() {
                ApiError::unsupported_media_type(message)
            } else {
                ApiError::bad_request(message)
            }
        }),
        BodyFormat::Yaml => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))
        }
        BodyFormat::Json => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"))),
    }
}

/// Renders one object for the client.
fn object_response(target: &Target, object: Value, render: Render, rev: Option<u64>) -> Value {
    let object = with_version(&target.info, object);
    match render {
        Render::Json => object,
        Render::Metadata => table::partial_metadata(&object),
        Render::Table(version) => table::table(
            &target.info,
            &[&object],
            version,
            rev.unwrap_or_default(),
            None,
            IncludeObject::Metadata,
            true,
        ),
    }
}

/// Sets `apiVersion` to the version the client addressed (custom resources store one).
pub fn with_version(info: &ResourceInfo, mut object: Value) -> Value {
    if info.custom
        && let Some(o) = object.as_object_mut()
    {
        o.insert("apiVersion".into(), json!(info.api_version()));
    }
    object
}

fn respond(status: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response();
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = text.parse() {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

fn written(target: &Target, w: Written, render: Render) -> Response {
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    respond(
        status,
        &object_response(target, w.object, render, None),
        &w.warnings,
    )
}

async fn dispatch(
    State(state): State<Shared>,
    user: Option<axum::Extension<Arc<crate::auth::UserInfo>>>,
    method: Method,
    uri: Uri,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let query = query.map_err(|e| ApiError::bad_request(format!("the query cannot be read: {e}")));
    let body = crate::edge::read_body(body, state.limits.max_body_bytes).await;
    let result = match (query, body) {
        (Ok(Query(query)), Ok(body)) => {
            let user = user.map(|axum::Extension(u)| u);
            handle(&state, user, &method, &uri, Params(query), &headers, body).await
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(%method, path = uri.path(), status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

async fn handle(
    state: &Shared,
    user: Option<Arc<crate::auth::UserInfo>>,
    method: &Method,
    uri: &Uri,
    params: Params,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let service = &state.service;
    if let Some(answer) =
        crate::metrics::serve(service, &state.kubelet, method, uri.path(), &params).await
    {
        return answer;
    }
    let target = match route(service, uri.path())? {
        Route::Discovery(doc) | Route::Group(doc) => {
            return if method == Method::GET {
                Ok(Json(doc).into_response())
            } else {
                Err(ApiError::method_not_allowed(format!(
                    "{method} is not supported on {}",
                    uri.path()
                )))
            };
        }
        Route::Resource(t) => t,
    };
    if crate::strategy::tokenreview::is_token_review(&target.info) {
        if method != Method::POST || target.name.is_some() {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on tokenreviews"
            )));
        }
        let review = decode_body(headers, &body)?;
        let answer = crate::strategy::tokenreview::create(&state.authn, service, review)?;
        return Ok(respond(StatusCode::CREATED, &answer, &[]));
    }
    let info = target.info.clone();
    let ns = target.namespace.as_deref();
    if crate::authz::review::is_review(&info) {
        if method != Method::POST || target.name.is_some() {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on {}",
                info.plural
            )));
        }
        let anonymous = crate::auth::UserInfo::anonymous();
        let user = user.as_deref().unwrap_or(&anonymous);
        let review = decode_body(headers, &body)?;
        let answer =
            crate::authz::review::create(state.authz.as_ref(), service, &info, ns, user, review)?;
        return Ok(respond(StatusCode::CREATED, &answer, &[]));
    }
    let render = negotiate(headers)?;
    match (
        method.clone(),
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (Method::GET, None, None) => {
            if params.flag("watch") {
                return watch::serve(service.clone(), target, &params, render).await;
            }
            list(service, &target, &params, render).await
        }
        (Method::GET, Some(name), None | Some("status")) => {
            service
                .await_resource_version(params.get("resourceVersion"))
                .await?;
            let o = service.get(&info, ns, name)?;
            Ok(respond(
                StatusCode::OK,
                &object_response(&target, (*o.value).clone(), render, Some(o.rev)),
                &[],
            ))
        }
        (Method::GET, Some(name), Some("scale")) => {
            Ok(Json(service.scale(&info, ns, name)?).into_response())
        }
        (Method::GET, Some(name), Some("log")) => {
            logs::serve(
                service,
                &state.kubelet,
                ns.unwrap_or_default(),
                name,
                &params,
            )
            .await
        }
        (Method::POST, None, None) => {
            let object = decode_body(headers, &body)?;
            if object.get("kind").and_then(Value::as_str) == Some("List") {
                return Err(ApiError::bad_request(
                    "a List cannot be created in one request; create its items one by one",
                ));
            }
            let w = service
                .create(
                    &info,
                    ns,
                    object,
                    &params.write_options(headers, None, &user)?,
                )
                .await?;
            Ok(written(&target, w, render))
        }
        (Method::POST, Some(name), Some("token")) if info.plural == "serviceaccounts" => {
            let request = decode_body(headers, &body)?;
            let ns = ns.unwrap_or_default();
            let answer =
                crate::token::request(state.tokens.as_deref(), service, ns, name, &request).await?;
            Ok(respond(StatusCode::CREATED, &answer, &[]))
        }
        (Method::POST, Some(name), Some("eviction")) if info.plural == "pods" => {
            let eviction = decode_body(headers, &body)?;
            let dry_run = dry_run(params.get("dryRun"))?;
            let status = crate::eviction::evict(
                service,
                ns.unwrap_or_default(),
                name,
                &eviction,
                dry_run,
                user.clone(),
            )
            .await?;
            Ok(respond(StatusCode::CREATED, &status, &[]))
        }
        (Method::POST, Some(name), Some("binding")) => {
            let binding = decode_body(headers, &body)?;
            service.bind(ns.unwrap_or_default(), name, &binding).await?;
            Ok(respond(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                &[],
            ))
        }
        (Method::PUT, Some(name), sub @ (None | Some("status" | "finalize" | "approval"))) => {
            let object = decode_body(headers, &body)?;
            let w = service
                .update(
                    &info,
                    ns,
                    name,
                    object,
                    sub,
                    &params.write_options(headers, None, &user)?,
                )
                .await?;
            Ok(written(&target, w, render))
        }
        (Method::PUT, Some(name), Some("scale")) => {
            let scale = decode_body(headers, &body)?;
            let options = params.write_options(headers, None, &user)?;
            let scale = service
                .update_scale(&info, ns, name, &scale, &options)
                .await?;
            Ok(Json(scale).into_response())
        }
        (Method::PATCH, Some(name), sub) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default();
            let kind = PatchKind::from_content_type(content_type).ok_or_else(|| {
                ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
                ))
            })?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::bad_request("the request body is empty"));
            }
            // An apply patch is YAML (JSON being YAML); the other patch types are JSON.
            let patch = if kind == PatchKind::Apply {
                decode_as(BodyFormat::Yaml, &body)?
            } else {
                decode_as(BodyFormat::Json, &body)?
            };
            if sub == Some("scale") {
                let options = params.write_options(headers, Some(PatchKind::Merge), &user)?;
                let scale = service
                    .patch_scale(&info, ns, name, &patch, &options)
                    .await?;
                return Ok(Json(scale).into_response());
            }
            let w = service
                .patch(
                    &info,
                    ns,
                    name,
                    kind,
                    &patch,
                    sub,
                    &params.write_options(headers, Some(kind), &user)?,
                )
                .await?;
            Ok(written(&target, w, render))
        }
        (Method::DELETE, Some(name), None) => {
            let options = delete_options(headers, &body, &params, &user)?;
            let object = service.delete(&info, ns, name, &options).await?;
            Ok(respond(
                StatusCode::OK,
                &object_response(&target, object, Render::Json, None),
                &[],
            ))
        }
        (Method::DELETE, None, None) => {
            let options = delete_options(headers, &body, &params, &user)?;
            let list_options = params.list_options()?;
            let (deleted, rev) = service
                .delete_collection(&info, ns, &list_options, &options)
                .await?;
            let deleted: Vec<Value> = deleted
                .into_iter()
                .map(|o| with_version(&info, o))
                .collect();
            let list = json!({
                "kind": format!("{}List", info.kind),
                "apiVersion": info.api_version(),
                "metadata": {"resourceVersion": rev.to_string()},
                "items": deleted,
            });
            Ok(Json(list).into_response())
        }
        (m, _, sub) => Err(ApiError::method_not_allowed(format!(
            "{m} is not supported on {}{}",
            info.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

async fn list(
    service: &Arc<Service>,
    target: &Target,
    params: &Params,
    render: Render,
) -> ApiResult<Response> {
    let info = &target.info;
    let options = params.list_options()?;
    service
        .await_resource_version(params.get("resourceVersion"))
        .await?;
    let result = service.list(info, target.namespace.as_deref(), &options)?;
    let body = match render {
        Render::Table(version) => {
            let objects: Vec<Value> = result
                .items
                .iter()
                .map(|o| with_version(info, (**o).clone()))
                .collect();
            let refs: Vec<&Value> = objects.iter().collect();
            let include = IncludeObject::parse(params.get("includeObject"));
            table::table(
                info,
                &refs,
                version,
                result.rev,
                result.continue_token.as_deref(),
                include,
                true,
            )
        }
        Render::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_metadata(result.rev, result.continue_token.as_deref()),
            "items": result.items.iter().map(|o| table::partial_metadata(o)).collect::<Vec<_>>(),
        }),
        Render::Json => {
            // Serialize items straight from the shared values.
            let items: Vec<Value> = result
                .items
                .iter()
                .map(|o| with_version(info, (**o).clone()))
                .collect();
            json!({
                "kind": format!("{}List", info.kind),
                "apiVersion": info.api_version(),
                "metadata": list_metadata(result.rev, result.continue_token.as_deref()),
                "items": items,
            })
        }
    };
    Ok(respond(StatusCode::OK, &body, &[]))
}

fn list_metadata(rev: u64, continue_token: Option<&str>) -> Value {
    let mut m = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = continue_token {
        m["continue"] = json!(c);
    }
    m
}

fn delete_options(
    headers: &HeaderMap,
    body: &[u8],
    params: &Params,
    user: &Option<Arc<crate::auth::UserInfo>>,
) -> ApiResult<DeleteOptions> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else if headers.contains_key(header::CONTENT_TYPE) {
        decode_body(headers, body)?
    } else {
        // DELETE is no request a browser sends cross-site unasked: DeleteOptions without a
        // Content-Type are read as JSON, as kube-apiserver reads them.
        decode_as(BodyFormat::Json, body)?
    };
    let grace = match params.int("gracePeriodSeconds")? {
        Some(g) => Some(g),
        None => from_body["gracePeriodSeconds"].as_i64(),
    };
    let propagation = Some(params.get("propagationPolicy").to_string())
        .filter(|p| !p.is_empty())
        .or_else(|| from_body["propagationPolicy"].as_str().map(str::to_string))
        .or_else(|| match from_body["orphanDependents"].as_bool() {
            Some(true) => Some("Orphan".into()),
            _ => None,
        });
    let body_dry_run = from_body["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        grace_period_seconds: grace,
        propagation_policy: propagation,
        precondition_uid: from_body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_resource_version: from_body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run: dry_run(params.get("dryRun"))? || body_dry_run,
        user: user.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(content_type: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(c) = content_type {
            h.insert(header::CONTENT_TYPE, c.parse().unwrap());
        }
        h
    }

    #[test]
    fn bodies_a_browser_sends_cross_site_are_refused_unread() {
        let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#;
        for content_type in [
            None,
            Some("text/plain"),
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/cbor"),
        ] {
            let e = decode_body(&typed(content_type), body).unwrap_err();
            assert_eq!(e.code, 415, "{content_type:?}");
            assert_eq!(e.reason, "UnsupportedMediaType", "{content_type:?}");
            assert!(
                e.message.starts_with(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
                ),
                "{}",
                e.message
            );
        }
        for content_type in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/yaml",
        ] {
            let v = decode_body(&typed(Some(content_type)), body).unwrap();
            assert_eq!(v["kind"], "ConfigMap", "{content_type}");
        }
    }

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn content_negotiation() {
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), Render::Json);
        assert_eq!(
            negotiate(&accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")).unwrap(),
            Render::Table("v1")
        );
        assert_eq!(
            negotiate(&accept("application/vnd.kubernetes.protobuf, */*")).unwrap(),
            Render::Json
        );
        assert_eq!(
            negotiate(&accept("application/vnd.kubernetes.protobuf"))
                .unwrap_err()
                .code,
            406
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}
