//! The MQTT topic convention (shared/DESIGN.md §9), with a configurable prefix and site.
//!
//! ```text
//! {prefix}/{site}/{device}/telemetry          SenML JSON array, one message per uplink
//! {prefix}/{site}/{device}/status             retained: registered | sleeping | gone, with address
//! {prefix}/{site}/{device}/cmd/{req}          platform → device command
//! {prefix}/{site}/{device}/cmd/{req}/result   the device's answer, or expiry
//! {prefix}/{site}/_edge/{edge}/security       security events
//! {prefix}/{site}/_edge/{edge}/status         retained edge status; the Last Will says offline
//! ```

/// Why a name cannot be a topic level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Empty, or contains `/`, `+`, `#` or NUL, or starts with `_` (reserved for `_edge`).
    #[error("`{0}` cannot be a topic level (empty, or contains / + # NUL, or starts with _)")]
    BadLevel(String),
}

/// Builds and parses the topics of one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    site: String,
}

/// A topic level is usable when it is non-empty and free of MQTT's special characters.
pub fn valid_level(level: &str) -> bool {
    !level.is_empty() && !level.starts_with('_') && !level.contains(['/', '+', '#', '\0'])
}

impl Topics {
    /// Topics under `{prefix}/{site}`; the prefix may have several levels (`a/b`).
    pub fn new(prefix: &str, site: &str) -> Result<Topics, TopicError> {
        if prefix.is_empty()
            || prefix
                .split('/')
                .any(|l| l.is_empty() || l.contains(['+', '#', '\0']))
        {
            return Err(TopicError::BadLevel(prefix.to_owned()));
        }
        if !valid_level(site) {
            return Err(TopicError::BadLevel(site.to_owned()));
        }
        Ok(Topics {
            prefix: prefix.to_owned(),
            site: site.to_owned(),
        })
    }

    /// `{prefix}/{site}/{device}/telemetry` (built once per record: one exactly sized
    /// allocation, no formatting machinery)
    pub fn telemetry(&self, device: &str) -> String {
        [&self.prefix, "/", &self.site, "/", device, "/telemetry"].concat()
    }

    /// `{prefix}/{site}/{device}/status`
    pub fn status(&self, device: &str) -> String {
        [&self.prefix, "/", &self.site, "/", device, "/status"].concat()
    }

    /// `{prefix}/{site}/{device}/cmd/{req}/result`
    pub fn command_result(&self, device: &str, req: &str) -> String {
        [
            &self.prefix,
            "/",
            &self.site,
            "/",
            device,
            "/cmd/",
            req,
            "/result",
        ]
        .concat()
    }

    /// The subscription filter for commands: `{prefix}/{site}/+/cmd/+`.
    pub fn command_filter(&self) -> String {
        [&self.prefix, "/", &self.site, "/+/cmd/+"].concat()
    }

    /// `{prefix}/{site}/_edge/{edge}/security`
    pub fn edge_security(&self, edge: &str) -> String {
        [&self.prefix, "/", &self.site, "/_edge/", edge, "/security"].concat()
    }

    /// `{prefix}/{site}/_edge/{edge}/status`
    pub fn edge_status(&self, edge: &str) -> String {
        [&self.prefix, "/", &self.site, "/_edge/", edge, "/status"].concat()
    }

    /// The device and request id of a command topic, if `topic` is one of this site's.
    pub fn parse_command<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?;
        let rest = rest.strip_prefix(self.site.as_str())?.strip_prefix('/')?;
        let mut levels = rest.split('/');
        let (device, cmd, req) = (levels.next()?, levels.next()?, levels.next()?);
        (levels.next().is_none() && cmd == "cmd" && valid_level(device) && valid_level(req))
            .then_some((device, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_design_topics() {
        let t = Topics::new("v6iot", "plant-a").unwrap();
        assert_eq!(t.telemetry("s1"), "v6iot/plant-a/s1/telemetry");
        assert_eq!(t.status("s1"), "v6iot/plant-a/s1/status");
        assert_eq!(
            t.command_result("s1", "r7"),
            "v6iot/plant-a/s1/cmd/r7/result"
        );
        assert_eq!(t.command_filter(), "v6iot/plant-a/+/cmd/+");
        assert_eq!(t.edge_security("e1"), "v6iot/plant-a/_edge/e1/security");
        assert_eq!(t.edge_status("e1"), "v6iot/plant-a/_edge/e1/status");
    }

    #[test]
    fn parses_command_topics_of_its_own_site_only() {
        let t = Topics::new("acme/iot", "s").unwrap();
        assert_eq!(
            t.parse_command("acme/iot/s/dev-1/cmd/42"),
            Some(("dev-1", "42"))
        );
        assert_eq!(t.parse_command("acme/iot/s/dev-1/cmd/42/result"), None);
        assert_eq!(t.parse_command("acme/iot/other/dev-1/cmd/42"), None);
        assert_eq!(t.parse_command("acme/iot/s/_edge/cmd/42"), None);
        assert!(Topics::new("v6iot", "a/b").is_err());
        assert!(Topics::new("v6/#", "a").is_err());
    }
}
