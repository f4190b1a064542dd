//! The OpenAPI 3.1 document at `/api/v1/openapi.json`, generated from
//! [`super::ROUTES`] so that it lists exactly the routes the router
//! serves (a test checks the router against the same table).

use serde_json::{Map, Value, json};

use super::{Access, ROUTES};

fn schema_ref(name: &str) -> Value {
    match name.strip_suffix("[]") {
        Some(item) => {
            json!({ "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } })
        }
        None => json!({ "$ref": format!("#/components/schemas/{name}") }),
    }
}

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    let mut schemas: Map<String, Value> = Map::new();
    for route in ROUTES {
        let mut op = json!({ "summary": route.summary, "responses": {} });
        let ok = match route.response {
            Some(name) => json!({
                "description": "OK",
                "content": { "application/json": { "schema": schema_ref(name) } }
            }),
            None => json!({ "description": "OK" }),
        };
        op["responses"]["200"] = ok;
        if let Some(name) = route.request {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref(name) } }
            });
        }
        for name in [route.request, route.response].into_iter().flatten() {
            let base = name.trim_end_matches("[]").to_owned();
            schemas.insert(base, json!({ "type": "object", "description": "See wgmesh_core::control and wgmesh_core::netmap." }));
        }
        match route.access {
            Access::Public => {}
            Access::Node => {
                op["security"] = json!([{ "nodeCredential": [] }]);
                op["responses"]["401"] = json!({ "description": "No or unknown credential" });
                op["responses"]["403"] =
                    json!({ "description": "An admin token or relay token on a node route" });
            }
            Access::Admin => {
                op["security"] = json!([{ "adminToken": [] }]);
                op["responses"]["401"] = json!({ "description": "No or unknown token" });
                op["responses"]["403"] =
                    json!({ "description": "A node credential or relay token on an admin route" });
            }
            Access::Relay => {
                op["security"] = json!([{ "relayToken": [] }]);
                op["responses"]["401"] = json!({ "description": "No or unknown token" });
                op["responses"]["403"] =
                    json!({ "description": "An admin token or node credential on a relay route" });
            }
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "wgmesh coordination server", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": { "type": "http", "scheme": "bearer", "description": "wga_… admin API token" },
                "nodeCredential": { "type": "http", "scheme": "bearer", "description": "wgn_… node credential from enrolment" },
                "relayToken": { "type": "http", "scheme": "bearer", "description": "wgr_… relay token from POST /api/v1/relays" }
            },
            "schemas": schemas
        }
    })
}
