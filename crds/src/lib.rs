//! The sublet API: custom resource types, their validation and the standalone loader.
