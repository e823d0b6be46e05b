//! Route registration: every module adds its routes to a [`Routes`], which hands each one to
//! axum's router and also keeps its template. The templates build the guard's own route table
//! ([`crate::guard::RouteTable`]), so the guard knows a request's route before the router runs
//! and wraps the whole router once, instead of being a layer around every route (which cost
//! each request a boxed route clone, a boxed future and three mapping services more).
//!
//! The session checks are also registered as *direct* routes ([`Routes::direct_get`]): for a
//! `GET` on them, the guard, which has already found the route, calls the handler itself
//! (`axum::handler::Handler::call`, the same extractors) instead of asking the router to find
//! it again (a second match, the path parameters decoded into a new map, a boxed route clone).
//! The router still has them, for `HEAD` and for the 405 of other methods. A direct handler
//! must not use `Path` or `RawPathParams`: only the router fills them.
//!
//! A session check whose session is in memory needs nothing async: a direct route may also
//! have an [`AnswerNow`], which the guard tries first and which answers within the request's
//! call (no handler future to allocate, move and poll). It answers only what memory settles
//! (a cached, unexpired session; a JWT verified before and unexpired), with the answer the
//! handler would give, through the same core calls, whose async forms try the same memory
//! first; every other case, refusals included, is the handler's. A panic in it is answered
//! 500, as a handler's is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::handler::Handler;
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::Router;

use crate::state::AppState;

/// What a handler answers: axum boxes the future of every async fn handler.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// A direct route's answer made in the request's call, when memory settles it; `None`: the
/// handler answers (see the module documentation).
pub type AnswerNow = fn(&Request, &AppState) -> Option<Response>;

/// A `GET` the guard answers without the router (see the module documentation).
#[derive(Clone)]
pub struct Direct {
    pub now: Option<AnswerNow>,
    pub handler: Arc<dyn Fn(Request, AppState) -> Answer + Send + Sync>,
}

/// A set of routes with their templates, in the order they were added.
pub struct Routes {
    router: Router<AppState>,
    templates: Vec<(&'static str, Option<Direct>)>,
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
        self.templates.push((template, None));
        self
    }

    /// `.route(template, get(handler))`, with `handler` also called directly by the guard for
    /// `GET`, after `now` when given (a hot path; no `Path` extractor, see the module
    /// documentation).
    pub fn direct_get<H, T>(
        mut self,
        template: &'static str,
        now: Option<AnswerNow>,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState, Future = Answer>,
        T: 'static,
    {
        self.router = self.router.route(template, get(handler.clone()));
        let direct = Direct {
            now,
            handler: Arc::new(move |request, state| Handler::call(handler.clone(), request, state)),
        };
        self.templates.push((template, Some(direct)));
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.templates.extend(other.templates);
        self
    }

    /// The router and every template it routes, with the direct handler of those that have one.
    pub fn into_parts(self) -> (Router<AppState>, Vec<(&'static str, Option<Direct>)>) {
        (self.router, self.templates)
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}
