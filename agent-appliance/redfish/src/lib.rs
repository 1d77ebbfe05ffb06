//! Redfish client. Work in progress.
