//! (tests added by the issue 27 work)
