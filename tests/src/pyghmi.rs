//! pyghmi's `pyghmi.ipmi.bmc.Bmc` as a second, independent IPMI 2.0 BMC (cipher suite
//! 3 only; answers Get Channel Cipher Suites). A small subclass, written to the test
//! dir, keeps power and boot device in memory, logs every action to a file, and
//! echoes SOL input back.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::context::TestContext;
use crate::ipmi_sim::{PASSWORD, USER, free_udp_port};
use crate::process::Proc;

/// The Python of the test venv.
pub const PYTHON: &str = "/opt/outband-venv/bin/python";

const SCRIPT: &str = r#"
import sys
import pyghmi.ipmi.bmc as bmc

USER, PASSWORD, PORT, LOG = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


class FakeBmc(bmc.Bmc):
    def __init__(self):
        super().__init__({USER: PASSWORD}, port=PORT, address='127.0.0.1')
        self.power = 'off'
        self.boot = 'default'
        self.iohandler = self.echo
        self.early = b''

    def record(self, what):
        with open(LOG, 'a') as f:
            f.write(what + '\n')

    def get_power_state(self):
        return self.power

    def power_off(self):
        self.power = 'off'
        self.record('off')

    def power_on(self):
        self.power = 'on'
        self.record('on')

    def power_cycle(self):
        self.power = 'on'
        self.record('cycle')

    def power_reset(self):
        self.record('reset')

    def power_shutdown(self):
        self.power = 'off'
        self.record('soft')

    def is_active(self):
        return True

    def get_boot_device(self):
        return self.boot

    def set_boot_device(self, bootdevice):
        self.boot = bootdevice
        self.record('boot ' + str(bootdevice))

    def activate_payload(self, request, session):
        super().activate_payload(request, session)
        # pyghmi hands over SOL input that arrives while it is still setting up the
        # console (before self.sol is set): echo it now.
        if self.sol is not None and self.early:
            data, self.early = self.early, b''
            self.echo(data)

    def echo(self, data):
        if self.sol is None:
            self.early += bytes(data)
            return
        # A client that goes away mid-SOL must not crash the BMC.
        try:
            self.sol.send_data(data)
        except Exception as e:
            print('sol echo failed:', e, file=sys.stderr)


b = FakeBmc()
print('ready', flush=True)
b.listen()
"#;

/// A running pyghmi BMC with user `admin`/`password`.
#[derive(Debug)]
pub struct PyghmiBmc {
    port: u16,
    log: PathBuf,
    proc: Proc,
}

impl PyghmiBmc {
    /// Writes the script into `<test dir>/pyghmi/` and starts it; ready when it says
    /// so (after binding its port).
    pub fn start(ctx: &TestContext) -> anyhow::Result<PyghmiBmc> {
        let dir = ctx.subdir("pyghmi");
        let script = dir.join("fake_bmc.py");
        std::fs::write(&script, SCRIPT)?;
        let log = dir.join("actions");
        let port = free_udp_port();
        let proc = Proc::spawn(
            ctx,
            "pyghmi",
            Path::new(PYTHON),
            [
                "-u".as_ref(),
                script.as_os_str(),
                USER.as_ref(),
                PASSWORD.as_ref(),
                port.to_string().as_ref(),
                log.as_os_str(),
            ],
        )?;
        crate::wait::wait_until("pyghmi BMC ready", Duration::from_secs(15), || {
            proc.stdout().contains("ready")
        })?;
        Ok(PyghmiBmc { port, log, proc })
    }

    /// The BMC's UDP address.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// The UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every action the BMC performed, one per line ("on", "boot network", ...).
    pub fn actions(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The BMC process.
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}
