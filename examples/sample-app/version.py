# The only thing a test changes to ship a new version of the sample app.
VERSION = "v1"
