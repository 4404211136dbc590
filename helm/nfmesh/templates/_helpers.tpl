{{/*
Names, labels, the rendered nfmesh.yaml and the checks that refuse unworkable values.
*/}}

{{- define "nfmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nfmesh.fullname" -}}
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

{{/* A Service name with a suffix, kept within 63 characters. */}}
{{- define "nfmesh.suffixed" -}}
{{- $base := include "nfmesh.fullname" .root | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base .suffix -}}
{{- end -}}

{{- define "nfmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nfmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nfmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nfmesh.labels" -}}
helm.sh/chart: {{ include "nfmesh.chart" . }}
{{ include "nfmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nfmesh
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "nfmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nfmesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "nfmesh.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "nfmesh.tlsSecretName" -}}
{{- default (include "nfmesh.suffixed" (dict "root" . "suffix" "tls")) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "nfmesh.workers" -}}
{{- int .Values.gateway.workers -}}
{{- end -}}

{{/*
A listener's Service/container port name: its own name when it is a DNS label of at most 15
characters (IANA_SVC_NAME) that is not taken by the chart, else sbi-<index>.
*/}}
{{- define "nfmesh.listenerPortName" -}}
{{- $n := toString .listener.name -}}
{{- if and (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $n) (regexMatch "[a-z]" $n) (le (len $n) 15) (not (regexMatch "^(metrics|admin|n2)$" $n)) -}}
{{- $n -}}
{{- else -}}
{{- printf "sbi-%d" (int .index) -}}
{{- end -}}
{{- end -}}

{{/*
The listeners as nfmesh.yaml gets them: a TLS listener without a tls block is given the files
of the mounted Secret.
*/}}
{{- define "nfmesh.listeners" -}}
{{- $out := list -}}
{{- $mount := trimSuffix "/" .Values.tls.mountPath -}}
{{- range .Values.listeners -}}
{{- $l := deepCopy . -}}
{{- if and (eq (toString (default "h2c" $l.protocol)) "tls") (not $l.tls) $.Values.tls.enabled -}}
{{- $tls := dict "cert" (printf "%s/tls.crt" $mount) "key" (printf "%s/tls.key" $mount) -}}
{{- if $.Values.tls.verifyClients -}}
{{- $_ := set $tls "client_ca" (printf "%s/ca.crt" $mount) -}}
{{- $_ := set $tls "require_client_cert" true -}}
{{- end -}}
{{- $_ := set $l "tls" $tls -}}
{{- end -}}
{{- $out = append $out $l -}}
{{- end -}}
{{- toYaml (dict "listeners" $out) -}}
{{- end -}}

{{/* nfmesh.yaml: every config section of the values, as they are. */}}
{{- define "nfmesh.config" -}}
{{- $cfg := dict -}}
{{- range $section := list "gateway" "http2" "clusters" "routes" "scp" "registry" "ngap" "metrics" "admin" "tracing" "logging" "authz" "oauth2" "upstream_tls" "mesh_ca" -}}
{{- if hasKey $.Values $section -}}
{{- $_ := set $cfg $section (index $.Values $section) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "listeners" (get (fromYaml (include "nfmesh.listeners" .)) "listeners") -}}
{{- /* the NRF's apiRoot (notifications' nfInstanceUri, model C requests addressed to itself):
       default to the SBI Service's name rather than the bind address 0.0.0.0 */ -}}
{{- if and .Values.registry .Values.registry.enabled (not .Values.registry.api_root) -}}
{{- $first := first .Values.listeners -}}
{{- $scheme := ternary "https" "http" (eq (toString (default "h2c" $first.protocol)) "tls") -}}
{{- $root := printf "%s://%s.%s.svc:%d" $scheme (include "nfmesh.suffixed" (dict "root" . "suffix" "sbi")) .Release.Namespace (int (default 8080 $first.port)) -}}
{{- $_ := set $cfg "registry" (merge (dict "api_root" $root) (deepCopy .Values.registry)) -}}
{{- end -}}
# nfmesh.yaml rendered by the {{ include "nfmesh.chart" . }} chart from the release's values.
# Check it with: nfmesh config check nfmesh.yaml
{{ toYaml $cfg }}
{{- end -}}

{{/*
The pod securityContext: podSecurityContext, plus the namespaced sysctl
net.ipv4.ip_unprivileged_port_start when a port below 1024 is configured, so that the non-root
process without capabilities can bind it (a "safe" sysctl since Kubernetes 1.22).
*/}}
{{- define "nfmesh.podSecurityContext" -}}
{{- $ports := list -}}
{{- range .Values.listeners -}}{{- $ports = append $ports (int (default 8080 .port)) -}}{{- end -}}
{{- if .Values.metrics.enabled -}}{{- $ports = append $ports (int (default 9090 .Values.metrics.port)) -}}{{- end -}}
{{- if and .Values.admin .Values.admin.enabled -}}{{- $ports = append $ports (int (default 9901 .Values.admin.port)) -}}{{- end -}}
{{- if .Values.ngap.enabled -}}{{- $ports = append $ports (int (default 38412 .Values.ngap.port)) -}}{{- end -}}
{{- $min := 1024 -}}
{{- range $ports -}}{{- if lt . $min -}}{{- $min = . -}}{{- end -}}{{- end -}}
{{- $ctx := deepCopy (default dict .Values.podSecurityContext) -}}
{{- if lt $min 1024 -}}
{{- $sysctls := default list $ctx.sysctls -}}
{{- $sysctls = append $sysctls (dict "name" "net.ipv4.ip_unprivileged_port_start" "value" (toString $min)) -}}
{{- $_ := set $ctx "sysctls" $sysctls -}}
{{- end -}}
{{- toYaml $ctx -}}
{{- end -}}

{{/* The chart's refusals: each names the value to change. */}}
{{- define "nfmesh.validate" -}}
{{- $v := .Values -}}
{{- $workers := $v.gateway.workers -}}
{{- if or (kindIs "invalid" $workers) (kindIs "string" $workers) -}}
{{- fail "gateway.workers must be set to a number: in a container os.cpu_count() is the node's core count, not the pod's CPU limit (match it to resources.requests.cpu)" -}}
{{- end -}}
{{- $replicas := int $v.replicaCount -}}
{{- if $v.autoscaling.enabled -}}{{- $replicas = int $v.autoscaling.maxReplicas -}}{{- end -}}
{{- if and $v.registry.enabled (eq (toString $v.registry.store) "memory") -}}
{{- if gt $replicas 1 -}}
{{- fail (printf "registry.store is memory, which keeps NF profiles inside one pod: replicaCount must be 1 (got %d%s). Use registry.store: etcd with registry.etcd.endpoints to run replicas, or registry.enabled: false" $replicas (ternary ", autoscaling.maxReplicas" "" $v.autoscaling.enabled)) -}}
{{- end -}}
{{- if gt (int $workers) 1 -}}
{{- fail (printf "registry.store is memory, which lives in one process: gateway.workers must be 1 (got %d). Use registry.store: etcd to share the registry between workers" (int $workers)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- $drain := float64 (default 10 $v.gateway.drain_timeout_s) -}}
{{- $needed := addf $drain (float64 $v.preStopSleepSeconds) -}}
{{- if le (float64 $v.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed gateway.drain_timeout_s + preStopSleepSeconds (%v): SIGTERM drains in-flight streams and the kubelet kills the pod at the end of the grace period" (int $v.terminationGracePeriodSeconds) $needed) -}}
{{- end -}}
{{- if not $v.listeners -}}
{{- fail "listeners: at least one SBI listener is needed in a pod" -}}
{{- end -}}
{{- range $i, $l := $v.listeners -}}
{{- $host := toString (default "127.0.0.1" $l.host) -}}
{{- if regexMatch "^(127\\.|::1$|localhost$)" $host -}}
{{- fail (printf "listeners[%d] (%s) binds %s: the Service cannot reach a loopback address; use 0.0.0.0 or ::" $i $l.name $host) -}}
{{- end -}}
{{- if eq (int (default 8080 $l.port)) 0 -}}
{{- fail (printf "listeners[%d] (%s): port 0 (any free port) cannot be published by a Service" $i $l.name) -}}
{{- end -}}
{{- if and (eq (toString (default "h2c" $l.protocol)) "tls") (not $l.tls) (not $v.tls.enabled) -}}
{{- fail (printf "listeners[%d] (%s) is a TLS listener without a tls block: set tls.enabled (and tls.existingSecret or tls.cert/tls.key), or give listeners[%d].tls file paths" $i $l.name $i) -}}
{{- end -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- if and (not $v.tls.existingSecret) (or (not $v.tls.cert) (not $v.tls.key)) -}}
{{- fail "tls.enabled: set tls.existingSecret (a kubernetes.io/tls Secret) or both tls.cert and tls.key (PEM)" -}}
{{- end -}}
{{- if and $v.tls.verifyClients (not $v.tls.existingSecret) (not $v.tls.clientCa) -}}
{{- fail "tls.verifyClients needs tls.clientCa (PEM) or an existingSecret holding ca.crt" -}}
{{- end -}}
{{- end -}}
{{- if and $v.admin $v.admin.enabled -}}
{{- if regexMatch "^(127\\.|::1$|localhost$)" (toString (default "127.0.0.1" $v.admin.host)) -}}
{{- fail (printf "admin.host is %s: the kubelet's probes cannot reach a loopback address; use 0.0.0.0 or ::" (toString (default "127.0.0.1" $v.admin.host))) -}}
{{- end -}}
{{- if and (hasKey $v.admin "port") (eq (int $v.admin.port) 0) -}}
{{- fail "admin.port 0 (any free port) cannot be probed" -}}
{{- end -}}
{{- end -}}
{{- if and $v.prometheusRule $v.prometheusRule.enabled (not $v.metrics.enabled) -}}
{{- fail "prometheusRule.enabled needs metrics.enabled (the alerts read the gateway's metrics)" -}}
{{- end -}}
{{- if $v.metrics.enabled -}}
{{- if regexMatch "^(127\\.|::1$|localhost$)" (toString (default "127.0.0.1" $v.metrics.host)) -}}
{{- fail (printf "metrics.host is %s: probes and Prometheus cannot reach a loopback address; use 0.0.0.0 or ::" (toString (default "127.0.0.1" $v.metrics.host))) -}}
{{- end -}}
{{- if eq (int (default 9090 $v.metrics.port)) 0 -}}
{{- fail "metrics.port 0 (any free port) cannot be probed or scraped" -}}
{{- end -}}
{{- else if $v.serviceMonitor.enabled -}}
{{- fail "serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- if and $v.ngap.enabled (eq (int (default 38412 $v.ngap.port)) 0) -}}
{{- fail "ngap.port 0 (any free port) cannot be published by a Service" -}}
{{- end -}}
{{- end -}}
