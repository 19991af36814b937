//! Black-box tests: the built `hpcdesk` binary, run as `hpcdesk serve`, driven over HTTP
//! against real TigerVNC `Xvnc` desktops.

mod accounts;
mod browser;
mod choices;
mod cli;
mod crash;
mod desktop;
mod ending;
mod errors;
mod gateway;
mod helpers;
mod instances;
mod limits;
mod logging;
mod outage;
mod restart;
mod security;
mod seed;
mod slurm;
mod ssh;
mod sweep;
mod timelimit;
mod tls;
mod viewer;
