#!/bin/sh
psql -c 'select 1'
