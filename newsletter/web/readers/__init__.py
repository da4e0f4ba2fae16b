"""Readers' pages: signing up, confirming, leaving, and the manage page. A reader's signed token is the access rule."""
