#!/bin/sh
# Stands in for `gpupool agent` in the local provisioner's unit test: it runs, with its
# arguments on its command line, until it is stopped.
while :; do sleep 1; done
