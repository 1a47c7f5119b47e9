{{/* The chart's name, and the release's full name (at most 63 characters: a DNS label). */}}
{{- define "waitroom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "waitroom.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "waitroom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The recommended labels (app.kubernetes.io/*) for every object. */}}
{{- define "waitroom.labels" -}}
helm.sh/chart: {{ include "waitroom.chart" . }}
{{ include "waitroom.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: waitroom
{{- end -}}

{{- define "waitroom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "waitroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels and selector labels of one component: proxy, redis, counter. */}}
{{- define "waitroom.componentLabels" -}}
{{ include "waitroom.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "waitroom.componentSelector" -}}
{{ include "waitroom.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "waitroom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "waitroom.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "waitroom.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "waitroom.upstream" -}}
{{- tpl .Values.upstream . -}}
{{- end -}}

{{- define "waitroom.secretName" -}}
{{- default (include "waitroom.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Whether the chart renders a Secret of its own (any value given and no existingSecret). */}}
{{- define "waitroom.ownSecret" -}}
{{- $s := .Values.secrets -}}
{{- if and (not $s.existingSecret) (or $s.sessionSecret $s.adminToken $s.jwtSecret $s.redisPassword) -}}true{{- end -}}
{{- end -}}

{{/* How many proxies run at least: the fixed count, or the autoscaler's minimum. */}}
{{- define "waitroom.minReplicas" -}}
{{- if .Values.autoscaling.enabled -}}{{ .Values.autoscaling.minReplicas }}{{- else -}}{{ .Values.replicaCount }}{{- end -}}
{{- end -}}

{{- define "waitroom.storeURL" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis.%s.svc.cluster.local:6379/0" (include "waitroom.fullname" .) .Release.Namespace -}}
{{- else if .Values.redis.external.url -}}
{{- .Values.redis.external.url -}}
{{- else -}}
memory://
{{- end -}}
{{- end -}}

{{/* A duration of the config file (500ms, 10s, 2m, 1h, 1d, or a number of seconds) in whole seconds,
     rounded up for ms and plain numbers. */}}
{{- define "waitroom.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d -}}{{ div (add (trimSuffix "ms" $d | atoi) 999) 1000 }}
{{- else if hasSuffix "s" $d -}}{{ trimSuffix "s" $d | atoi }}
{{- else if hasSuffix "m" $d -}}{{ mul (trimSuffix "m" $d | atoi) 60 }}
{{- else if hasSuffix "h" $d -}}{{ mul (trimSuffix "h" $d | atoi) 3600 }}
{{- else if hasSuffix "d" $d -}}{{ mul (trimSuffix "d" $d | atoi) 86400 }}
{{- else -}}{{ $d | float64 | ceil | int }}
{{- end -}}
{{- end -}}

{{/* The path prefixes the proxy must see: the configured list, or every room's and rule's prefix
     (a rule without match.path_prefix covers "/", and so does a config without rooms or rules). */}}
{{- define "waitroom.protectedPrefixes" -}}
{{- $prefixes := list -}}
{{- if .Values.istio.protectedPrefixes -}}
{{- $prefixes = .Values.istio.protectedPrefixes -}}
{{- else -}}
{{- range (concat (.Values.config.rooms | default list) (.Values.config.rate_limits | default list)) -}}
{{- $match := .match | default dict -}}
{{- $prefixes = append $prefixes ($match.path_prefix | default "/") -}}
{{- end -}}
{{- end -}}
{{- if or (not $prefixes) (has "/" $prefixes) -}}{{- $prefixes = list "/" -}}{{- end -}}
{{- toJson (uniq $prefixes) -}}
{{- end -}}

{{/* The workload's Service host and port, as the gateway routes to it: istio.workload, else upstream's. */}}
{{- define "waitroom.workloadHost" -}}
{{- $u := urlParse (include "waitroom.upstream" .) -}}
{{- default (regexReplaceAll ":[0-9]+$" $u.host "") .Values.istio.workload.host -}}
{{- end -}}

{{- define "waitroom.workloadPort" -}}
{{- $u := urlParse (include "waitroom.upstream" .) -}}
{{- $port := regexFind ":[0-9]+$" $u.host | trimPrefix ":" -}}
{{- if .Values.istio.workload.port -}}{{ .Values.istio.workload.port }}
{{- else if $port -}}{{ $port }}
{{- else if eq $u.scheme "https" -}}443
{{- else -}}80
{{- end -}}
{{- end -}}

{{/* Checks that rendering must not pass: each fails with a message that says what to set. */}}
{{- define "waitroom.validate" -}}
{{- $min := include "waitroom.minReplicas" . | int -}}
{{- $url := include "waitroom.storeURL" . -}}
{{- if and (gt $min 1) (hasPrefix "memory://" $url) -}}
{{- fail (printf "waitroom: %d replicas cannot share the embedded store (memory://): each would admit new_sessions on its own. Set redis.enabled=true or redis.external.url, or run one replica." $min) -}}
{{- end -}}
{{- if and (ne (toString .Values.proxy.workers) "1") (hasPrefix "memory://" $url) -}}
{{- fail (printf "waitroom: proxy.workers=%v needs a shared store: the embedded store (memory://) lives in one process. Set redis.enabled=true or redis.external.url, or proxy.workers=1." .Values.proxy.workers) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (hasPrefix "memory://" $url) -}}
{{- fail "waitroom: autoscaling needs a shared store: set redis.enabled=true or redis.external.url" -}}
{{- end -}}
{{- if and (not (hasPrefix "memory://" $url)) (not .Values.secrets.existingSecret) (not .Values.secrets.sessionSecret) -}}
{{- fail "waitroom: replicas sharing a store must share the cookie signing keys: set secrets.sessionSecret (openssl rand -hex 32) or secrets.existingSecret with a WAITROOM_SECRET key" -}}
{{- end -}}
{{- if contains "@" $url -}}
{{- fail "waitroom: redis.external.url must not carry credentials (the config is a ConfigMap): put the password in secrets.redisPassword" -}}
{{- end -}}
{{- /* SIGTERM comes after the preStop sleep; then the proxy serves admin.shutdown_delay more, stops
     accepting (up to 1 s), drains up to admin.drain (at least 1 s) and exits: 2 s cover the steps between. */ -}}
{{- $admin := .Values.config.admin | default dict -}}
{{- $drain := include "waitroom.seconds" ($admin.drain | default "10s") | int -}}
{{- $delay := include "waitroom.seconds" ($admin.shutdown_delay | default "0s") | int -}}
{{- $needed := add .Values.proxy.preStopSleepSeconds $delay $drain 2 | int -}}
{{- if lt (int .Values.proxy.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "waitroom: proxy.terminationGracePeriodSeconds (%d) must be at least proxy.preStopSleepSeconds + config.admin.shutdown_delay + config.admin.drain + 2 (%d + %d + %d + 2), or requests in flight are cut" (int .Values.proxy.terminationGracePeriodSeconds) (int .Values.proxy.preStopSleepSeconds) $delay $drain) -}}
{{- end -}}
{{- if not .Values.proxy.keepHostHeader -}}
{{- range .Values.config.rooms -}}
{{- if (.match | default dict).host -}}
{{- fail (printf "waitroom: room %s matches a host, which needs proxy.keepHostHeader=true (mitmproxy replaces Host in reverse mode)" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The waitroom config file rendered from .Values.config, with what the chart fills in (store.url,
     store.replicas, admin.host/port, client_ip, cluster): the ConfigMap's, and the one the
     pre-install/pre-upgrade check validates. */}}
{{- define "waitroom.configYaml" -}}
{{- $config := deepCopy .Values.config -}}
{{- $store := merge (dict "url" (include "waitroom.storeURL" .) "replicas" (max 1 (include "waitroom.minReplicas" . | int))) ($config.store | default dict) -}}
{{- $_ := set $store "url" (include "waitroom.storeURL" .) -}}
{{- $_ := set $config "store" $store -}}
{{- $admin := merge (dict "host" "0.0.0.0" "port" (int .Values.proxy.adminPort)) ($config.admin | default dict) -}}
{{- $_ := set $admin "host" "0.0.0.0" -}}
{{- $_ := set $admin "port" (int .Values.proxy.adminPort) -}}
{{- $_ := set $config "admin" $admin -}}
{{- $clientIP := dict "trusted_proxies" (int .Values.clientIP.trustedProxies) "ipv6_prefix" (int (.Values.clientIP.ipv6Prefix | default 64)) "ipv4_prefix" (int (.Values.clientIP.ipv4Prefix | default 32)) -}}
{{- if .Values.clientIP.header -}}{{- $_ := set $clientIP "header" .Values.clientIP.header -}}{{- end -}}
{{- $_ := set $config "client_ip" $clientIP -}}
{{- $_ := set $config "cluster" (dict "discover_replicas" .Values.cluster.discoverReplicas "service" (include "waitroom.fullname" .)) -}}
{{- if not $config.jwt -}}{{- $_ := unset $config "jwt" -}}{{- end -}}
{{ toYaml $config }}
{{- end -}}
