//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations
//! and the `outband-api` types. A test checks that every route is described.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "outband manager", description = "Users, tenants, roles, login, tokens and audit."),
    paths(
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::auth::change_password,
        super::admin::audit,
        super::admin::rotate_keys,
        super::ops::health,
        super::ops::metrics,
        super::ops::jwks,
        super::ops::openapi,
        super::tenants::create_tenant,
        super::tenants::list_tenants,
        super::tenants::get_tenant,
        super::tenants::create_user,
        super::tenants::list_users,
        super::tenants::update_user,
        super::tenants::reset_password,
        super::tenants::delete_user,
        super::tenants::delete_tenant,
        super::tenants::me,
        super::servers::create_server,
        super::servers::list_servers,
        super::servers::get_server,
        super::servers::update_server,
        super::servers::delete_server,
        super::gateways::create_gateway,
        super::gateways::list_gateways,
        super::gateways::new_gateway_credential,
        super::gateways::delete_gateway,
        super::gateways::register,
        super::gateways::heartbeat,
        super::gateways::session_authz,
        super::gateways::revocations,
        super::events::events,
        super::agents::list_agents,
        super::agents::lookup,
        super::agents::adopt,
        super::agents::reject,
        super::agents::create_join_token,
        super::agents::join,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Login, refresh, logout, password"),
        (name = "admin", description = "Global administration"),
        (name = "tenants", description = "Tenants (customers), their users and roles"),
        (name = "servers", description = "Inventory: servers, BMC endpoints, write-only credentials"),
        (name = "gateways", description = "Gateway administration (global admins)"),
        (name = "agents", description = "Agent adoption and join tokens"),
        (name = "gateway", description = "Calls a registered gateway makes (gateway token)"),
        (name = "ops", description = "Health, metrics, keys, this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "gateway",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("obg_ gateway token")
                    .build(),
            ),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
