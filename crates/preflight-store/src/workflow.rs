//! Persistence of the deployment workflow (in progress).
