#!/bin/sh
exec app
