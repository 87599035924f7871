//! `pipevpn demo`: two throw-away network namespaces, a real tunnel, live figures.
//! (to be written)

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {}

pub fn run(_args: &DemoArgs) -> crate::Result<()> {
    Err(crate::Error::Input("demo: not written yet".into()))
}
