# The tunnel gateway for users who build with Docker; same contract as
# deploy/images/gateway.sh (which builds it here without Docker): Debian's
# stock OpenSSH sshd running as the non-root user `tunnel` (uid 1000), config
# from /etc/ssh/gateway/config (sshd_config, authorized_keys; a ConfigMap) and
# the host key from /etc/ssh/gateway/hostkey (a Secret).
#
#   docker build -f deploy/docker/gateway.Dockerfile -t localhost/offload/gateway:1.0 deploy/docker
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssh-server \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
 && groupadd -g 1000 tunnel \
 && useradd -u 1000 -g 1000 -d /nonexistent -M -s /usr/sbin/nologin -c 'tunnel gateway' tunnel \
 && mkdir -p /etc/ssh/gateway/config /etc/ssh/gateway/hostkey /run/sshd /var/empty
USER 1000:1000
WORKDIR /
EXPOSE 2222
CMD ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/gateway/config/sshd_config"]
