{{/* Names. Pod names are <fullname>-coordinator-<i>, so keep fullname short. */}}
{{- define "rbk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "rbk.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rbk.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rbk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "rbk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rbk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rbk.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end -}}

{{- define "rbk.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rbk.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rbk.coordinator.name" -}}{{ include "rbk.fullname" . }}-coordinator{{- end -}}
{{- define "rbk.coordinator.headless" -}}{{ include "rbk.fullname" . }}-coordinator-headless{{- end -}}
{{- define "rbk.worker.name" -}}{{ include "rbk.fullname" . }}-worker{{- end -}}

{{- define "rbk.authSecret" -}}
{{- default (printf "%s-tokens" (include "rbk.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* More than one coordinator is a Raft group. */}}
{{- define "rbk.raftEnabled" -}}
{{- if or .Values.coordinator.raft.enabled (gt (int .Values.coordinator.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{/* Coordinator <i>'s stable DNS name under the headless Service.
     Call with (list $ i). */}}
{{- define "rbk.peerHost" -}}
{{- $ := index . 0 -}}
{{- $i := index . 1 -}}
{{- $host := printf "%s-%d.%s.%s.svc" (include "rbk.coordinator.name" $) (int $i) (include "rbk.coordinator.headless" $) $.Release.Namespace -}}
{{- if $.Values.clusterDomain -}}{{- $host = printf "%s.%s" $host $.Values.clusterDomain -}}{{- end -}}
{{- $host -}}
{{- end -}}

{{/* The URL workers and in-cluster clients dial. */}}
{{- define "rbk.coordinatorURL" -}}
{{- printf "%s://%s.%s.svc:%d" (include "rbk.scheme" .) (include "rbk.coordinator.name" .) .Release.Namespace (int .Values.coordinator.port) -}}
{{- end -}}

{{/* https when the coordinators serve TLS themselves (values tls). */}}
{{- define "rbk.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end -}}
{{- end -}}

{{/* Quorum-preserving disruption budget: at most (n-1)/2 voters down. */}}
{{- define "rbk.maxUnavailable" -}}
{{- div (sub (int .Values.coordinator.replicas) 1) 2 -}}
{{- end -}}

{{/* Scrape annotations; call with (list $ port). */}}
{{- define "rbk.metricsAnnotations" -}}
{{- $ := index . 0 -}}
{{- if $.Values.metrics.enabled -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* Environment every rbk process gets for the store: S3 credentials
     and the Redis URL, from Secrets, never from the ConfigMap. */}}
{{- define "rbk.storeEnv" -}}
{{- if .Values.store.s3.existingSecret }}
- name: RBK_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.s3.existingSecret }}
      key: {{ .Values.store.s3.accessKeyIdKey }}
- name: RBK_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.s3.existingSecret }}
      key: {{ .Values.store.s3.secretAccessKeyKey }}
{{- end }}
{{- if .Values.redis.enabled }}
- name: RBK_REDIS_URL
{{- if .Values.redis.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.urlKey }}
{{- else }}
  value: {{ required "redis.url or redis.existingSecret is required when redis.enabled" .Values.redis.url | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The shared store stack, `existence_cache > verify > compress > s3`
     (crates/store/src/config.rs), as the `[store]` table both workers and
     coordinators read. Credentials and the Redis URL come from the
     environment (rbk.storeEnv). */}}
{{- define "rbk.storeStack" -}}
[store]
type = "existence_cache"
capacity = {{ int64 .Values.store.existenceCache.capacity }}
ttl_secs = {{ int64 .Values.store.existenceCache.ttlSecs }}

[store.inner]
type = "verify"

[store.inner.inner]
type = "compress"
level = {{ int .Values.store.compressLevel }}

[store.inner.inner.inner]
type = "s3"
bucket = {{ .Values.store.s3.bucket | quote }}
{{- with .Values.store.s3.endpoint }}
endpoint = {{ . | quote }}
{{- end }}
{{- with .Values.store.s3.region }}
region = {{ . | quote }}
{{- end }}
{{- with .Values.store.s3.prefix }}
prefix = {{ . | quote }}
{{- end }}
{{- if kindIs "bool" .Values.store.s3.forcePathStyle }}
force_path_style = {{ .Values.store.s3.forcePathStyle }}
{{- end }}
{{- end -}}

{{/* Readiness of a Raft member: its own node id (ordinal + 1) is listed by
     `rbk coordinator members list` and a leader is known (first line:
     "term T  applied index A  leader L", L = 0 while none is). */}}
{{- define "rbk.joinedProbe" -}}
out=$(rbk coordinator members list --coordinator {{ if .Values.coordinator.raft.tls.enabled }}https{{ else }}http{{ end }}://127.0.0.1:{{ .Values.coordinator.raft.port }}) && printf '%s\n' "$out" | awk -v id=$((RBK_NODE_INDEX + 1)) 'NR == 1 && $NF == 0 { exit 1 } NR > 2 && $1 == id { ok = 1 } END { exit !ok }'
{{- end -}}

{{/* Log settings both roles read (values log.*). */}}
{{- define "rbk.logEnv" -}}
- name: RBK_LOG
  value: {{ .Values.log.level | quote }}
- name: RBK_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- end -}}

{{/* topologySpreadConstraints of one role, a constraint without a
     labelSelector getting the role's selector. Call with
     (list $ component constraints). */}}
{{- define "rbk.topologySpread" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- $out := list -}}
{{- range $c := index . 2 -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $sel := fromYaml (include "rbk.selectorLabels" $) -}}
{{- $_ := set $sel "app.kubernetes.io/component" $component -}}
{{- $c = merge (dict "labelSelector" (dict "matchLabels" $sel)) $c -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* PromQL matchers of the coordinators' series (metrics.coordinatorMatcher). */}}
{{- define "rbk.coordinatorMatcher" -}}
{{- default (printf "namespace=%q,container=\"coordinator\"" .Release.Namespace) .Values.metrics.coordinatorMatcher -}}
{{- end -}}

{{/* The Ingress serves TLS: its own list (coordinator.ingress.tls) or,
     without one, the coordinators' certificate (tls.enabled). */}}
{{- define "rbk.ingressTLS" -}}
{{- if or .Values.coordinator.ingress.tls .Values.tls.enabled }}true{{ end -}}
{{- end -}}
