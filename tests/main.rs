//! End-to-end tests: real `hookwarden` processes, real databases (SQLite files and
//! PostgreSQL on 127.0.0.1:5432), real HTTP on loopback.
//!
//! One binary, one module per capability; `support` holds the harness (a gateway process, a
//! test receiver that verifies what it gets, databases per test, request signers).

mod support;

mod access;
mod archive;
mod audit;
mod browser;
mod cli;
mod cli_tools;
mod console;
mod crash;
mod delivery;
mod demo;
mod event_counts;
mod handler;
mod handler_faults;
mod hostile_requests;
mod ingest;
mod ingest_guards;
mod oncall;
mod openapi;
mod probe;
mod python_sdk;
mod receipts;
mod replay;
mod replicas;
mod retention;
mod stall;
mod store_contract;
mod store_faults;
mod traces;
mod typescript_sdk;
