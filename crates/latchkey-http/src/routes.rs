//! Route registration: every module adds its routes to a [`Routes`], which hands each one to
//! axum's router and also keeps its template. The templates build the guard's own route table
//! ([`crate::guard::RouteTable`]), so the guard knows a request's route before the router runs
//! and wraps the whole router once, instead of being a layer around every route (which cost
//! each request a boxed route clone, a boxed future and three mapping services more).

use axum::routing::MethodRouter;
use axum::Router;

use crate::state::AppState;

/// A set of routes with their templates, in the order they were added.
pub struct Routes {
    router: Router<AppState>,
    templates: Vec<&'static str>,
}

impl Routes {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            templates: Vec::new(),
        }
    }

    /// As [`Router::route`] (same template syntax; axum panics on a duplicate, as there).
    pub fn route(mut self, template: &'static str, method_router: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(template, method_router);
        self.templates.push(template);
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.templates.extend(other.templates);
        self
    }

    /// The router and every template it routes.
    pub fn into_parts(self) -> (Router<AppState>, Vec<&'static str>) {
        (self.router, self.templates)
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}
