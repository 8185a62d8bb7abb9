module example.com/server

go 1.21

require (
	github.com/go-chi/chi/v5 v5.0.12
	golang.org/x/text v0.14.0
)
